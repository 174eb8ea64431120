"""``python -m avemo.fusion.bench``: training-epoch time, device-resident features vs per-sample loading.

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
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence

from avemo.data.store import ClipFeatures, make_provenance, write_clips
from avemo.fusion.config import load_config
from avemo.fusion.train import build_datamodule, build_model

TITLE = "Stage two: training epoch, device-resident features vs per-sample HDF5 loader"


# ----------------------------------------------------------------------------- generated data


def _write_set(path: Path, name: str, lengths: list[int], dim: int, rate: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    clips = []
    for i, n in enumerate(lengths):
        v = rng.standard_normal((n, dim), dtype=np.float32)
        clips.append(ClipFeatures(f"clip{i:05d}", v, np.arange(n) / rate, np.ones(n, bool)))
    write_clips(path, clips, make_provenance(name, {"generated": True, "dim": dim}, {}, rate_hz=rate))
    del clips
    return path


def afew_like(tmp: Path, n_clips: int = 773, mean_len: int = 70, dim: int = 512) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.normal(mean_len, 25, n_clips).round(), 10, 3 * mean_len).astype(int).tolist()
    classes = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    man = pd.DataFrame({"clip_id": [f"clip{i:05d}" for i in range(n_clips)],
                        "video": "x.avi", "split": "train", "subject": "s",
                        "label": [classes[i % 7] for i in range(n_clips)]})
    man.loc[man.index % 10 == 0, "split"] = "val"
    man.to_csv(tmp / "afew.csv", index=False)
    return {"manifest": tmp / "afew.csv", "lengths": lengths, "features": {
        "face": _write_set(tmp / "face.h5", "face_gen", lengths, dim, 25.0, 1),
        "audio": _write_set(tmp / "audio.h5", "audio_gen", lengths, dim, 25.0, 2)}}


def affwild_like(tmp: Path, n_frames: int = 2_800_000, n_videos: int = 564, dim: int = 512) -> dict[str, Any]:
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
        pd.DataFrame({"time": t, "valence": np.sin(t), "arousal": np.cos(t)}).to_csv(ann, index=False)
        rows.append({"clip_id": f"clip{i:05d}", "video": "x.mp4", "split": "train", "subject": f"s{i}",
                     "annotation": str(ann)})
    man = pd.DataFrame(rows)
    man.loc[man.index % 10 == 0, "split"] = "val"
    man.to_csv(tmp / "affwild.csv", index=False)
    return {"manifest": tmp / "affwild.csv", "lengths": lengths,
            "features": {"face": _write_set(tmp / "face_aw.h5", "face_gen", lengths, dim, 30.0, 3)}}


# ----------------------------------------------------------------------------- per-sample path


class PerSampleHDF5(torch.utils.data.Dataset):
    """Reference-style loading: one h5py read per modality per item (file kept open)."""

    def __init__(self, files: dict[str, Path], items: list[tuple[str, int, int]], labels: Any,
                 frame: bool) -> None:
        self.files, self.items, self.labels, self.frame = files, items, labels, frame
        self._h: dict[str, Any] = {}
        self._index: dict[str, dict[str, int]] = {}
        self._off: dict[str, np.ndarray] = {}

    def _open(self, m: str) -> Any:
        if m not in self._h:
            f = h5py.File(self.files[m], "r")
            self._h[m] = f
            self._off[m] = f["offsets"][()]
            self._index[m] = {c.decode() if isinstance(c, bytes) else c: i
                              for i, c in enumerate(f["clip_ids"][()])}
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
                vals = [torch.nn.functional.pad(v, (*([0, 0] * (v.dim() - 1)), 0, window - len(v)))
                        for v in vals]
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


def _train_steps(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: torch.device,
                 mods: list[str], frame: bool, max_batches: int | None, train: bool) -> tuple[float, float, int]:
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


def bench_scale(name: str, data: dict[str, Any], cfg: dict[str, Any], device: torch.device,
                per_sample_batches: int | None, repeats: int = 3) -> list[dict[str, Any]]:
    cfg = load_config(cfg)
    t0 = time.perf_counter()
    dm = build_datamodule(cfg, str(device), feature_cache={})
    load_s = time.perf_counter() - t0
    torch.manual_seed(0)
    model = build_model(cfg, dm).to(device)
    frame = dm.task_type == "frame"
    mods = dm.modalities
    bs = int(cfg["data"]["batch_size"])
    # per-sample items: exactly the device path's training sequences
    seqs = dm.part_seqs["train"].cpu().numpy()
    t = dm.tables
    if frame:
        starts = (t.win_start.cpu().numpy() - t.lab_off[t.win_clip])[seqs]
        lens = t.win_len.cpu().numpy()[seqs]
        items = [(t.clip_ids[t.win_clip[s]], int(st), int(ln)) for s, st, ln in zip(seqs, starts, lens, strict=True)]
        y_all = t.y.cpu().numpy()

        def labels(cid: str, start: int, length: int) -> torch.Tensor:
            a = int(t.lab_off[dm.pos[cid]]) + start
            return torch.from_numpy(y_all[a:a + length])
    else:
        items = [(t.clip_ids[s], 0, 0) for s in seqs]
        y_all = t.y.cpu().numpy()

        def labels(cid: str, start: int, length: int) -> torch.Tensor:
            return torch.tensor(int(y_all[dm.pos[cid]]))
    ds = PerSampleHDF5({m: Path(data["features"][m]) for m in mods}, items, labels, frame)
    loader = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=0,
                                         collate_fn=_collate(t.window if frame else None))
    n_batches = len(loader)
    # warm-up both paths (allocator, kernels, page cache)
    _train_steps(model, dm.batches("train", bs, shuffle=True), device, mods, frame, 3, True)
    _train_steps(model, loader, device, mods, frame, 3, True)
    rows = []
    for train in (False, True):
        what = "train epoch" if train else "batches only"
        dev, ps = [], []
        for _ in range(repeats):  # interleaved, best of N: the machine may be shared
            dev.append(_train_steps(model, dm.batches("train", bs, shuffle=True), device, mods, frame,
                                    None, train))
            ps.append(_train_steps(model, loader, device, mods, frame, per_sample_batches, train))
        dev_w, dev_c = min(d[0] for d in dev), min(d[1] for d in dev)
        ps_n = ps[0][2]
        ps_w, ps_c = (min(p[i] for p in ps) * n_batches / ps_n for i in (0, 1))
        rows.append({
            "scale": name, "measure": what, "device": device.type,
            "batches/epoch": n_batches, "batch": bs,
            "device-resident s/epoch": round(dev_w, 3),
            "per-sample s/epoch": round(ps_w, 3),
            "speed-up (wall)": f"{ps_w / dev_w:.1f}x",
            "speed-up (CPU s)": f"{ps_c / max(dev_c, 1e-9):.1f}x",
            "per-sample timed": "all" if ps_n >= n_batches else f"{ps_n} batches, extrapolated",
            "load to device s (once)": round(load_s, 2),
        })
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None, quick: bool = False) -> Path:
    p = argparse.ArgumentParser(prog="python -m avemo.fusion.bench")
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--affwild-frames", type=int, default=2_800_000)
    p.add_argument("--skip-affwild", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; best is reported")
    p.add_argument("--per-sample-batches", type=int, default=100,
                   help="Aff-Wild2 scale: per-sample batches timed, then extrapolated")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--tmp", default=None, help="folder for the generated HDF5 files")
    a, _ = p.parse_known_args(argv)
    quick = quick or a.quick
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=a.tmp, prefix="avemo-fusion-bench-") as td:
        tmp = Path(td)
        n_clips = 120 if quick else 773
        afew = afew_like(tmp, n_clips=n_clips)
        afew_cfg = {
            "name": "bench_afew", "seed": 0,
            "data": {"manifest": str(afew["manifest"]), "features": {k: str(v) for k, v in afew["features"].items()},
                     "batch_size": 32},
            "task": {"type": "clip"},
            "model": {"name": "zhou", "temporal": "fan_self", "fusion": {"name": "fbp", "k": 5, "o": 256}},
            "trainer": {"accelerator": device.type.replace("cuda", "gpu")},
        }
        rows += bench_scale(f"AFEW ({n_clips} clips x ~70 x 512, face+audio)", afew, afew_cfg, device, None,
                            a.repeats)
        if not a.skip_affwild:
            frames = 200_000 if quick else a.affwild_frames
            t0 = time.perf_counter()
            aw = affwild_like(tmp, n_frames=frames, n_videos=60 if quick else 564)
            print(f"generated Aff-Wild2-scale file in {time.perf_counter() - t0:.0f} s", flush=True)
            aw_cfg = {
                "name": "bench_affwild", "seed": 0,
                "data": {"manifest": str(aw["manifest"]), "features": {"face": str(aw["features"]["face"])},
                         "batch_size": 32, "window": {"length": 300, "hop": 200}},
                "task": {"type": "frame"},
                "model": {"name": "unimodal", "modality": "face", "encoder": {"name": "linear", "dim": 64},
                          "temporal": "mean"},
                "trainer": {"accelerator": device.type.replace("cuda", "gpu")},
            }
            rows += bench_scale(f"Aff-Wild2 ({frames / 1e6:.2g} M frames x 512, 300/200 windows)", aw, aw_cfg,
                                device, a.per_sample_batches, max(1, a.repeats - 1))
    from avemo.data.benchtable import write_section

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


if __name__ == "__main__":
    main()
