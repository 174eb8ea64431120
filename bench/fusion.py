"""``python -m avemo.bench --only fusion``: training-epoch time, device-resident features vs per-sample loading.

Two data paths feed the SAME model and optimiser:

* ``device``: ``CachedFeatureDataModule`` (whole feature file on the training device; batches
  are index gathers + masks on the device).
* ``per-sample``: a torch ``Dataset`` whose ``__getitem__`` reads one clip (or one 300-frame
  window) from the HDF5 file with h5py, a ``DataLoader`` that collates by padding, then
  ``.to(device)`` — how the reference code loads data. ``num_workers=0`` (this bench must
  run on small shared machines; workers would add processes, not remove the per-item cost).

Scales: AFEW (773 clips x ~70 frames, 512-d face + 512-d audio rows, clip task) and
Aff-Wild2 (2.8 M frames x 512-d face rows in 564 videos, frame task, windows 300 / hop 200).
Features are generated (right shapes, random values) and written with the real store to a
temporary HDF5 file. At Aff-Wild2 scale the per-sample epoch is timed on a subset of
batches and extrapolated to the full epoch (the table says how many batches were timed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence

from avemo.bench.table import write_section
from avemo.data.store import ClipFeatures, make_provenance, write_clips
from avemo.fusion.config import load_config
from avemo.fusion.evaluate import predict_partition, score
from avemo.fusion.module import build_loss
from avemo.fusion.registry import OPTIMIZERS
from avemo.fusion.train import build_datamodule, build_model, fit_and_evaluate

if TYPE_CHECKING:  # not imported at run time: an --overhead-ref tree may predate RunConfig
    from avemo.fusion.config import RunConfig

TITLE = "Stage two: training epoch, device-resident features vs per-sample HDF5 loader"


# ----------------------------------------------------------------------------- generated data


def _write_set(path: Path, name: str, lengths: list[int], dim: int, rate: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    clips = []
    for i, n in enumerate(lengths):
        v = rng.standard_normal((n, dim), dtype=np.float32)
        clips.append(ClipFeatures(f"clip{i:05d}", v, np.arange(n) / rate, np.ones(n, bool)))
    write_clips(
        path, clips, make_provenance(name, {"generated": True, "dim": dim}, {}, rate_hz=rate)
    )
    del clips
    return path


def afew_like(tmp: Path, n_clips: int = 773, mean_len: int = 70, dim: int = 512) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    lengths = (
        np.clip(rng.normal(mean_len, 25, n_clips).round(), 10, 3 * mean_len).astype(int).tolist()
    )
    classes = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    man = pd.DataFrame(
        {
            "clip_id": [f"clip{i:05d}" for i in range(n_clips)],
            "video": "x.avi",
            "split": "train",
            "subject": "s",
            "label": [classes[i % 7] for i in range(n_clips)],
        }
    )
    man.loc[man.index % 10 == 0, "split"] = "val"
    man.to_csv(tmp / "afew.csv", index=False)
    return {
        "manifest": tmp / "afew.csv",
        "lengths": lengths,
        "features": {
            "face": _write_set(tmp / "face.h5", "face_gen", lengths, dim, 25.0, 1),
            "audio": _write_set(tmp / "audio.h5", "audio_gen", lengths, dim, 25.0, 2),
        },
    }


def affwild_frame_config(aw: dict[str, Any], name: str, device: torch.device) -> dict[str, Any]:
    """The run config both the Aff-Wild2-scale bench and the GPU check train on ``affwild_like``'s
    file: a per-frame task, 300/200 windows, a linear face encoder and mean pooling."""
    return {
        "name": name,
        "seed": 0,
        "data": {
            "manifest": str(aw["manifest"]),
            "features": {"face": str(aw["features"]["face"])},
            "batch_size": 32,
            "window": {"length": 300, "hop": 200},
        },
        "task": {"type": "frame"},
        "model": {
            "name": "unimodal",
            "modality": "face",
            "encoder": {"name": "linear", "dim": 64},
            "temporal": "mean",
        },
        "trainer": {"accelerator": "gpu" if device.type == "cuda" else "cpu"},
    }


def affwild_like(
    tmp: Path, n_frames: int = 2_800_000, n_videos: int = 564, dim: int = 512
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    w = rng.gamma(2.0, 1.0, n_videos)
    lengths = np.maximum(100, (w / w.sum() * n_frames).astype(int))
    lengths[-1] += n_frames - lengths.sum()
    lengths = lengths.tolist()
    (tmp / "ann").mkdir(exist_ok=True)
    rows = []
    for i, n in enumerate(lengths):
        t = np.arange(n) / 30.0
        ann = tmp / "ann" / f"clip{i:05d}.csv"
        pd.DataFrame({"time": t, "valence": np.sin(t), "arousal": np.cos(t)}).to_csv(
            ann, index=False
        )
        rows.append(
            {
                "clip_id": f"clip{i:05d}",
                "video": "x.mp4",
                "split": "train",
                "subject": f"s{i}",
                "annotation": str(ann),
            }
        )
    man = pd.DataFrame(rows)
    man.loc[man.index % 10 == 0, "split"] = "val"
    man.to_csv(tmp / "affwild.csv", index=False)
    return {
        "manifest": tmp / "affwild.csv",
        "lengths": lengths,
        "features": {"face": _write_set(tmp / "face_aw.h5", "face_gen", lengths, dim, 30.0, 3)},
    }


# ----------------------------------------------------------------------------- per-sample path


class PerSampleHDF5(torch.utils.data.Dataset):
    """Reference-style loading: one h5py read per modality per item (file kept open)."""

    def __init__(
        self, files: dict[str, Path], items: list[tuple[str, int, int]], labels: Any, frame: bool
    ) -> None:
        self.files, self.items, self.labels, self.frame = files, items, labels, frame
        self._h: dict[str, Any] = {}
        self._index: dict[str, dict[str, int]] = {}
        self._off: dict[str, np.ndarray] = {}

    def _open(self, m: str) -> Any:
        if m not in self._h:
            f = h5py.File(self.files[m], "r")
            self._h[m] = f
            self._off[m] = f["offsets"][()]
            self._index[m] = {
                c.decode() if isinstance(c, bytes) else c: i
                for i, c in enumerate(f["clip_ids"][()])
            }
        return self._h[m]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        cid, start, length = self.items[i]
        out: dict[str, Any] = {}
        for m in self.files:
            f = self._open(m)
            k = self._index[m][cid]
            a, b = int(self._off[m][k]), int(self._off[m][k + 1])
            lo, hi = (a + start, min(b, a + start + length)) if self.frame else (a, b)
            out[m] = torch.from_numpy(f["values"][lo:hi])
            out[f"{m}_mask"] = torch.from_numpy(f["mask"][lo:hi].astype(bool))
        out["y"] = self.labels(cid, start, length)
        return out


def _collate(window: int | None) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for key in items[0]:
            vals = [it[key] for it in items]
            if key == "y" and vals[0].dim() == 0:
                batch[key] = torch.stack(vals)
                continue
            if window is not None:  # fixed-length windows: pad to the window
                vals = [
                    torch.nn.functional.pad(v, (*([0, 0] * (v.dim() - 1)), 0, window - len(v)))
                    for v in vals
                ]
            batch[key] = pad_sequence(vals, batch_first=True)
        if "y" in batch and batch["y"].dim() == 3:
            batch["y_mask"] = ~torch.isnan(batch["y"])
            batch["y"] = torch.nan_to_num(batch["y"])
        return batch

    return collate


# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_steps(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    mods: list[str],
    frame: bool,
    max_batches: int | None,
    train: bool,
) -> tuple[float, float, int]:
    """(wall s, process CPU s, batches) for ``max_batches`` (or all) steps.

    ``train=False`` only materialises the batches on the device (the data path alone).
    """
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    n = 0
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in batches:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if train:
            out = model({k: batch[k] for k in batch if k in mods or k[:-5] in mods})
            if frame:
                m = batch["y_mask"].float()
                loss = (((out - batch["y"]) ** 2) * m).sum() / m.sum().clamp_min(1)
            else:
                loss = torch.nn.functional.cross_entropy(out, batch["y"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        n += 1
        if max_batches and n >= max_batches:
            break
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, n


def bench_scale(
    name: str,
    data: dict[str, Any],
    cfg: dict[str, Any],
    device: torch.device,
    per_sample_batches: int | None,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    run = load_config(cfg)
    t0 = time.perf_counter()
    dm = build_datamodule(run, str(device), feature_cache={})
    load_s = time.perf_counter() - t0
    torch.manual_seed(0)
    model = build_model(run, dm).to(device)
    frame = dm.spec.frame
    mods = dm.modalities
    bs = run.data.batch_size
    # per-sample items: exactly the device path's training sequences
    seqs = dm.part_seqs["train"].cpu().numpy()
    t = dm.tables
    if frame:
        starts = (t.win_start.cpu().numpy() - t.lab_off[t.win_clip])[seqs]
        lens = t.win_len.cpu().numpy()[seqs]
        items = [
            (t.clip_ids[t.win_clip[s]], int(st), int(ln))
            for s, st, ln in zip(seqs, starts, lens, strict=True)
        ]
        y_all = t.y.cpu().numpy()

        def labels(cid: str, start: int, length: int) -> torch.Tensor:
            a = int(t.lab_off[dm.pos[cid]]) + start
            return torch.from_numpy(y_all[a : a + length])
    else:
        items = [(t.clip_ids[s], 0, 0) for s in seqs]
        y_all = t.y.cpu().numpy()

        def labels(cid: str, start: int, length: int) -> torch.Tensor:
            return torch.tensor(int(y_all[dm.pos[cid]]))

    ds = PerSampleHDF5({m: Path(data["features"][m]) for m in mods}, items, labels, frame)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=bs,
        shuffle=True,
        num_workers=0,
        collate_fn=_collate(t.window if frame else None),
    )
    n_batches = len(loader)
    # warm-up both paths (allocator, kernels, page cache)
    _train_steps(model, dm.batches("train", bs, shuffle=True), device, mods, frame, 3, True)
    _train_steps(model, loader, device, mods, frame, 3, True)
    rows = []
    for train in (False, True):
        what = "train epoch" if train else "batches only"
        dev, ps = [], []
        for _ in range(repeats):  # interleaved, best of N: the machine may be shared
            dev.append(
                _train_steps(
                    model, dm.batches("train", bs, shuffle=True), device, mods, frame, None, train
                )
            )
            ps.append(_train_steps(model, loader, device, mods, frame, per_sample_batches, train))
        dev_w, dev_c = min(d[0] for d in dev), min(d[1] for d in dev)
        ps_n = ps[0][2]
        ps_w, ps_c = (min(p[i] for p in ps) * n_batches / ps_n for i in (0, 1))
        rows.append(
            {
                "scale": name,
                "measure": what,
                "device": device.type,
                "batches/epoch": n_batches,
                "batch": bs,
                "device-resident s/epoch": round(dev_w, 3),
                "per-sample s/epoch": round(ps_w, 3),
                "speed-up (wall)": f"{ps_w / dev_w:.1f}x",
                "speed-up (CPU s)": f"{ps_c / max(dev_c, 1e-9):.1f}x",
                "per-sample timed": "all" if ps_n >= n_batches else f"{ps_n} batches, extrapolated",
                "load to device s (once)": round(load_s, 2),
            }
        )
        print(rows[-1], flush=True)
    return rows


# ----------------------------------------------------------------------------- fit overhead

OVERHEAD_TITLE = "Stage two: `fuse-train` fit vs a plain PyTorch loop (same layers, batches, steps)"


def _fit_settings(cfg: RunConfig | Mapping[str, Any]) -> tuple[int, dict[str, Any], Any]:
    """(seed, optimiser name + options, eval section) of the run config. Under
    ``--overhead-ref`` this runs against an older tree whose ``load_config`` gives a plain
    dict; that dict is resolved (every key filled in by its schema), so no default is
    restated here either."""
    if isinstance(cfg, Mapping):
        return int(cfg["seed"]), dict(cfg["optim"]), cfg["eval"]
    return cfg.seed, {"name": cfg.optim.name, **cfg.optim.options()}, cfg.eval


def plain_fit(cfg: RunConfig | Mapping[str, Any], dm: Any, epochs: int) -> tuple[float, float]:
    """The reference: seed, model, loss, optimiser as ``fit_and_evaluate`` builds them, then
    ``epochs`` x (train steps over ``dm.train_dataloader()`` + one validation pass scored by
    the task). Returns (wall s, process CPU s) of the loop, what ``fit_seconds`` /
    ``fit_cpu_seconds`` time in a run."""
    seed, optim, eval_cfg = _fit_settings(cfg)
    torch.manual_seed(seed)
    model = build_model(cfg, dm).to(dm.device)
    if isinstance(cfg, Mapping):  # a pre-22.1 --overhead-ref tree: its build_loss takes the dict
        loss_fn = build_loss(cfg, dm)  # type: ignore[arg-type]  # that tree's, not the one checked
    else:
        loss_fn = build_loss(cfg, dm)
    # the run's Task: a pre-22 --overhead-ref tree kept it as dm.task_obj (dm.task was a dict)
    task = getattr(dm, "task_obj", dm.task)
    opt = OPTIMIZERS.build(optim.pop("name"), model.parameters(), **optim)
    mods = dm.modalities
    loader = dm.train_dataloader()
    det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)  # a plain loop sets nothing
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        model.train()
        for batch in loader:
            out = model({k: v for k, v in batch.items() if k in mods or k[:-5] in mods})
            loss = task.batch_loss(loss_fn, out, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        score(predict_partition(model, dm, "val"), dm, eval_cfg)
    out = time.perf_counter() - t0, time.process_time() - c0
    torch.use_deterministic_algorithms(det)
    return out


#: the models timed against a plain loop: a tiny one (Lightning's per-step cost shows most) and
#: the AFEW-scale grid's FAN-relation model (the compute a real run has)
OVERHEAD_MODELS = {
    "zhou mean+concat, 128-d": (
        {"name": "zhou", "temporal": "mean", "fusion": {"name": "concat"}},
        128,
    ),
    "zhou fan_relation+fbp, 512-d": (
        {
            "name": "zhou",
            "temporal": "fan_relation",
            "fusion": {"name": "fbp", "k": 5, "o": 256, "dropout": 0.1},
        },
        512,
    ),
    # the EmoDB model the issue measured: 64-bin rows -> 2-D CNN + SpecAugment, other stream ->
    # MLP, FAN self-attention each, concat (workflows/grids/emodb.yaml logmel_aug_speech_concat)
    "EmoDB-like CNN+MLP, 64-d": (
        {
            "name": "zhou",
            "visual": "face",
            "audio": ["audio"],
            "fusion": "concat",
            "temporal": "fan_self",
            "encoder": {
                "name": "mlp",
                "per_modality": {
                    "face": {
                        "name": "audio_cnn",
                        "channels": [16, 32, 64],
                        "pool_time": [2, 2, 2],
                        "pool_freq": [2, 2, 2],
                        "dropout": 0.2,
                        "time_masks": 2,
                        "time_mask_width": 10,
                        "freq_masks": 2,
                        "freq_mask_width": 8,
                        "time_shift": 30,
                    }
                },
            },
        },
        64,
    ),
}


def bench_overhead(
    tmp: Path,
    n_clips: int = 411,
    epochs: int = 5,
    repeats: int = 3,
    batch_size: int = 16,
    label: str = "",
    model: str = "zhou mean+concat, 128-d",
) -> list[dict[str, Any]]:
    """``fit_and_evaluate`` (Lightning, callbacks, checkpoints, metrics.csv) vs ``plain_fit``,
    alternated A/B in one process, best of ``repeats``; fit time only (``fit_seconds``)."""
    model_cfg, dim = OVERHEAD_MODELS[model]
    (tmp / f"data{dim}").mkdir(exist_ok=True)
    data = afew_like(tmp / f"data{dim}", n_clips=n_clips, dim=dim)
    cfg = load_config(
        {
            "name": "bench_overhead",
            "seed": 0,
            "data": {
                "manifest": str(data["manifest"]),
                "features": {k: str(v) for k, v in data["features"].items()},
                "batch_size": batch_size,
            },
            "task": {"type": "clip"},
            "model": model_cfg,
            "trainer": {
                "accelerator": "cpu",
                "max_epochs": epochs,
                "early_stopping": None,
                "progress": "none",
            },
            "output": {"plots": False, "verbose": False},
        }
    )
    dm = build_datamodule(cfg, "cpu", feature_cache={})
    lit, plain = [], []
    for r in range(repeats + 1):  # round 0 warms both paths up and is not counted
        with tempfile.TemporaryDirectory(dir=tmp) as rd:
            dm.seed = 0
            fit_and_evaluate(cfg, dm, Path(rd), progress=False)
            fm = json.loads((Path(rd) / "final_metrics.json").read_text())
            a = (fm["fit_seconds"], fm.get("fit_cpu_seconds", float("nan")))
        dm.seed = 0
        b = plain_fit(cfg, dm, epochs)
        if r:
            lit.append(a)
            plain.append(b)
        print(
            f"overhead round {r}: fuse-train fit {a[0]:.2f}s ({a[1]:.2f} CPU s), "
            f"plain loop {b[0]:.2f}s ({b[1]:.2f} CPU s)",
            flush=True,
        )
    steps = len(dm.train_dataloader()) * epochs
    lw, lc = min(x[0] for x in lit), min(x[1] for x in lit)
    pw, pc = min(x[0] for x in plain), min(x[1] for x in plain)
    return [
        {
            "code": label or "current",
            "model": model,
            "clips": n_clips,
            "batch": batch_size,
            "epochs": epochs,
            "steps": steps,
            "plain loop s": round(pw, 2),
            "fuse-train fit s": round(lw, 2),
            "ratio (wall)": f"{lw / pw:.2f}x",
            "plain CPU s": round(pc, 2),
            "fuse-train CPU s": round(lc, 2),
            "ratio (CPU s)": f"{lc / pc:.2f}x" if lc == lc else "n/a",
            "overhead ms/step (wall)": round((lw - pw) / steps * 1e3, 1),
        }
    ]


def overhead_rows(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """This checkout's row, and with ``--overhead-ref REV`` first the row of commit REV (its
    tree from ``git archive`` of the repository holding the working directory, this checkout's
    bench entry copied in, run as a subprocess)."""
    import subprocess
    import sys

    kw = {"n_clips": args.overhead_clips, "epochs": args.overhead_epochs, "repeats": args.repeats}
    rows: list[dict[str, Any]] = []
    if args.overhead_ref:
        root = Path(
            subprocess.run(
                ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        src, tree = tmp / "ref" / "src", tmp / "ref" / "pkg" / "avemo"
        src.mkdir(parents=True)
        arch = subprocess.run(
            ["git", "-C", str(root), "archive", args.overhead_ref], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=arch, check=True)
        tree.parent.mkdir()
        (src / "avemo").rename(tree)  # the layout setup.py installs
        for sub in ("data", "extract", "fusion", "workflows", "bench"):
            if (src / sub).is_dir():
                (src / sub).rename(tree / sub)
        (tree / "bench").mkdir(exist_ok=True)
        for name in (
            "__init__.py",
            "__main__.py",
            "table.py",
            "fusion.py",
        ):  # this checkout's entry
            (tree / "bench" / name).write_text((root / "bench" / name).read_text())
        out = tmp / "ref.json"
        cmd = [
            sys.executable,
            "-m",
            "avemo.bench",
            "--only",
            "fusion",
            "--overhead",
            "--json-out",
            str(out),
            "--overhead-label",
            f"{args.overhead_ref} (before)",
            "--repeats",
            str(args.repeats),
            "--overhead-clips",
            str(args.overhead_clips),
            "--overhead-epochs",
            str(args.overhead_epochs),
        ]
        import os

        subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(tree.parent)}, check=True, cwd=tmp)
        rows += json.loads(out.read_text())
    for model in OVERHEAD_MODELS:
        rows += bench_overhead(tmp, label=args.overhead_label, model=model, **kw)
    return rows


OVERHEAD_NOTES = (
    "One process per code version; inside it `fit_and_evaluate` (Lightning Trainer, callbacks, "
    "checkpoints, metrics.csv, CSV logger) and `plain_fit` (same model init, loss, Adam, "
    "device batches and steps; one validation pass scored per epoch) alternate A/B, round 0 "
    "is a warm-up, best of N. Fit time only (the run's `fit_seconds` / `fit_cpu_seconds`). "
    "torch threads = 1. Generated AFEW-like features (face + audio of the row's width). "
    "Lightning's cost is per step (its hooks), so it weighs most on the tiny model; the "
    "FAN-relation row is the compute of the grid bench's models. CPU seconds are the steadier "
    "column on a shared machine. Reproduce: `python -m avemo.bench --only fusion --overhead --overhead-ref REV`."
)


def main(argv: list[str] | None = None, quick: bool = False) -> Path:
    p = argparse.ArgumentParser(prog="python -m avemo.bench --only fusion")
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--affwild-frames", type=int, default=2_800_000)
    p.add_argument("--skip-affwild", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; best is reported")
    p.add_argument(
        "--per-sample-batches",
        type=int,
        default=100,
        help="Aff-Wild2 scale: per-sample batches timed, then extrapolated",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--tmp", default=None, help="folder for the generated HDF5 files")
    p.add_argument(
        "--overhead",
        action="store_true",
        help="only the fit-vs-plain-loop rows (fuse-train overhead)",
    )
    p.add_argument(
        "--overhead-ref", default=None, help="also measure this git revision (before row)"
    )
    p.add_argument("--overhead-label", default="this checkout")
    p.add_argument("--overhead-clips", type=int, default=411)
    p.add_argument("--overhead-epochs", type=int, default=5)
    p.add_argument("--json-out", default=None, help="--overhead: write the rows here, no table")
    a, _ = p.parse_known_args(argv)
    quick = quick or a.quick
    if a.overhead:
        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory(dir=a.tmp, prefix="avemo-overhead-") as td:
            overhead = overhead_rows(a, Path(td))
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(overhead))
            return Path(a.json_out)
        path = write_section(OVERHEAD_TITLE, overhead, OVERHEAD_NOTES)
        print(f"fusion bench: {path}")
        return path
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=a.tmp, prefix="avemo-fusion-bench-") as td:
        tmp = Path(td)
        n_clips = 120 if quick else 773
        afew = afew_like(tmp, n_clips=n_clips)
        afew_cfg = {
            "name": "bench_afew",
            "seed": 0,
            "data": {
                "manifest": str(afew["manifest"]),
                "features": {k: str(v) for k, v in afew["features"].items()},
                "batch_size": 32,
            },
            "task": {"type": "clip"},
            "model": {
                "name": "zhou",
                "temporal": "fan_self",
                "fusion": {"name": "fbp", "k": 5, "o": 256},
            },
            "trainer": {"accelerator": device.type.replace("cuda", "gpu")},
        }
        rows += bench_scale(
            f"AFEW ({n_clips} clips x ~70 x 512, face+audio)",
            afew,
            afew_cfg,
            device,
            None,
            a.repeats,
        )
        if not a.skip_affwild:
            frames = 200_000 if quick else a.affwild_frames
            t0 = time.perf_counter()
            aw = affwild_like(tmp, n_frames=frames, n_videos=60 if quick else 564)
            print(f"generated Aff-Wild2-scale file in {time.perf_counter() - t0:.0f} s", flush=True)
            aw_cfg = affwild_frame_config(aw, "bench_affwild", device)
            rows += bench_scale(
                f"Aff-Wild2 ({frames / 1e6:.2g} M frames x 512, 300/200 windows)",
                aw,
                aw_cfg,
                device,
                a.per_sample_batches,
                max(1, a.repeats - 1),
            )

    notes = (
        "Same model, optimiser and batches on both paths; paths measured interleaved, best of "
        "N repeats (wall) and process CPU seconds (less sensitive to other load on the machine). device-resident: feature file read once "
        "into a device tensor (load time in the last column, paid once per process and shared by "
        "runs via feature_cache), batches by index gather + masks on the device. per-sample: "
        "torch DataLoader (num_workers=0) whose __getitem__ reads one clip / one window per "
        "modality from the HDF5 file with h5py, padded in collate, then .to(device). "
        "'batches only' = building the batches (no model); 'train epoch' = forward + backward + "
        "Adam step. AFEW model: zhou (FAN self-attention + FBP k=5 o=256); Aff-Wild2 model: "
        "unimodal linear(64) per frame. Generated features (right shapes, random values)."
        + (" QUICK run (small sizes)." if quick else "")
    )
    path = write_section(TITLE, rows, notes)
    print(f"fusion bench: {path}")
    return path
