"""A trained run applied to new clips: what stage one must extract, inputs, tables, plots.

Stage two only (no extractor import): ``workflows/predict.py`` extracts the features this
module asks for and hands their files back. Everything comes from the run folder, so a
machine with no training data can predict:

* ``config.yaml`` -- model, task, windows, ``max_rows``;
* ``features.json`` -- per modality the feature set, its full extractor config and the
  sha256 of every weight file (what the new clips must be extracted with);
* ``data_report.json`` -- the task's classes / targets and each modality's row shape;
* ``normalisation.npz`` -- the training statistics (runs older than it recompute them from
  their training features: ``Run.stats``);
* ``speaker_norm.json`` / ``.npz`` -- the per-speaker normalisation the run used (``data.
  speaker_norm``; ``auto``: the mode it chose): new clips are normalised the same way, per
  speaker (``subjects``: the input manifest's ``subject`` column or ``--speaker``; clips with
  none are one speaker), with a warning for a speaker with fewer clips than the statistics need;
* ``checkpoints/{best,last}.pt`` (which one: ``fusion.run.checkpoint_path``).

The run itself is ``fusion.run.Run`` (``Run.from_dir``).

Inputs are built the way the run's task builds them (``task.level``): one sequence per
clip (``build_clip_index``, the run's ``max_rows``), or windows over a per-frame timeline
(``build_window_index``, the run's window / alignment settings), where the timeline is the
rows of the run's first modality (its frames, e.g. face = video frames; the next modality's
rows for a clip that has none) since new clips have no annotation. Clips missing a modality are predicted from what they have; the table flags
them when the run never trained without that modality (``data.modality_dropout`` = 0 and no
non-ok clips kept with ``data.non_ok: keep``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from avemo.fusion.features import FeatureSet
from avemo.fusion.index import build_clip_index, build_window_index
from avemo.fusion.run import Run, RunFolderError


class SpeakerNormWarning(UserWarning):
    """A speaker's clips are too few for reliable per-speaker statistics."""


# ----------------------------------------------------------------------------- inputs


def _timelines(run: Run, fs: FeatureSet, ids: Sequence[str]) -> list[np.ndarray]:
    """Per clip, the times of the run's first modality that has rows (else an empty timeline)."""
    out = []
    for c in ids:
        times = np.zeros(0)
        for m in run.modalities:
            lo, hi = fs.arrays[m].rows_of(c)
            if hi > lo:
                times = np.asarray(fs.arrays[m].timestamps[lo:hi], np.float64)
                break
        out.append(times)
    return out


def speaker_normalise(
    run: Run, fs: FeatureSet, ids: Sequence[str], subjects: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The new clips normalised per speaker the way the run was trained (its recorded mode);
    ``subjects``: clip -> speaker (clips it does not name are one speaker, ``predict``). Warns
    (``SpeakerNormWarning``) for a speaker with fewer clips than ``speaker_norm.MIN_CLIPS``.
    Returns clip -> speaker used ({} when the run does not normalise per speaker)."""
    from avemo.fusion import speaker_norm as sn

    record = getattr(run, "speaker_norm", None)
    if not record:  # no record read: a run from before it normalised every speaker by its own
        record = {
            "mode": "off" if sn.mode_of(run.cfg["data"].get("speaker_norm")) == "off" else "speaker"
        }
    mode = record["mode"]
    if mode == "off":
        return {}
    subjects = subjects or {}
    who = {
        c: "predict"
        if pd.isna(subjects.get(c)) or not str(subjects.get(c)).strip()
        else str(subjects[c])
        for c in ids
    }
    counts: dict[str, int] = {}
    for s in who.values():
        counts[s] = counts.get(s, 0) + 1
    few = {s: n for s, n in counts.items() if n < sn.MIN_CLIPS}
    if few:
        warnings.warn(
            f"the run normalises features per speaker ({mode}), from each speaker's own clips; "
            + ", ".join(f"{s}: {n} clip(s)" for s, n in sorted(few.items()))
            + f" -- fewer than {sn.MIN_CLIPS}: their statistics are noisy. Give more clips per speaker "
            "(a manifest's subject column, or --speaker for files of one speaker)",
            SpeakerNormWarning,
            stacklevel=2,
        )
    ref = getattr(run, "speaker_ref", None) or {}
    if mode == "shrink" and not all(m in ref for m in fs.arrays):
        raise RunFolderError(
            f"{run.run_dir} normalised per speaker with shrinkage but has no "
            f"{sn.REFERENCE_FILE} (the pooled statistics); retrain the run"
        )
    fs.arrays = sn.normalised_arrays(
        fs.arrays, who, mode, float(record.get("prior", sn.DEFAULT_PRIOR)), ref
    )
    return who


def _datamodule(
    run: Run, fs: FeatureSet, ids: list[str], subjects: Mapping[str, str] | None = None
) -> Any:
    """A datamodule over the new clips: the run's task, statistics and batching, partition
    ``predict`` (no manifest, no split: nothing here reads training data); features normalised
    per speaker first when the run was (``speaker_normalise``)."""
    from avemo.fusion.datamodule import CachedFeatureDataModule

    dm = CachedFeatureDataModule(run.cfg, run.device)
    dm.task_obj = run.task
    dm.speakers = speaker_normalise(run, fs, ids, subjects)
    dm.features, dm.stats = fs, run.stats
    dm.manifest = pd.DataFrame({"clip_id": ids})
    dm.pos = {c: i for i, c in enumerate(ids)}
    k = run.task.n_out
    if run.task.level == "frame":
        times = _timelines(run, fs, ids)
        labels = [np.full((len(t), k), np.nan) for t in times]
        dm.index = build_window_index(ids, times, labels, fs, run.cfg["data"])
    else:
        y = (
            torch.zeros(len(ids), dtype=torch.long)
            if hasattr(run.task, "classes")
            else torch.zeros(len(ids), k)
        )
        dm.index = build_clip_index(ids, fs, y, run.cfg["data"].get("max_rows"))
    dm.part_seqs = {"predict": dm._sequences(ids)}
    dm._ready = True
    return dm


def presence(fs: FeatureSet, ids: Sequence[str]) -> pd.DataFrame:
    """Per clip and modality: status and whether any usable row exists."""
    rows = []
    for c in ids:
        row: dict[str, Any] = {"clip_id": c}
        for m, a in fs.arrays.items():
            lo, hi = a.rows_of(c)
            ok = a.status_of(c) == "ok" and bool(a.row_mask[lo:hi].any()) if hi > lo else False
            row[f"{m}_status"] = a.status_of(c)
            row[f"{m}_present"] = ok
        rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def predict_files(
    run: Run,
    files: Mapping[str, str | os.PathLike[str]],
    clip_ids: Sequence[str] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    subjects: Mapping[str, str] | None = None,
    attention: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run the model on the clips of freshly extracted feature ``files`` (modality -> path).

    Returns ``(table, extra)``: one row per clip (clip tasks) or per timeline frame (frame
    tasks, with each modality's per-frame presence), and ``extra["presence"]``: per clip and
    modality the feature status and whether any usable row exists. ``subjects`` (clip ->
    speaker) matters for runs trained with per-speaker normalisation (``speaker_normalise``).
    ``attention``: also ``extra["attention"]``, per clip what ``fusion.plots.plot_attention``
    draws (``clip_attention``; clip tasks of models with temporal attention).
    """
    from avemo.progress import Progress

    data_cfg = {
        **run.cfg["data"],
        "features": {m: str(files[m]) for m in run.modalities},
        "non_ok": "keep",
        "expect": {},
    }
    fs = FeatureSet(data_cfg, run.device)
    for m in run.modalities:
        have, want = fs.arrays[m].row_shape, run.inputs[m]
        if tuple(have) != tuple(want):
            raise RunFolderError(
                f"{files[m]} ({m}) has rows of shape {tuple(have)}, the run was "
                f"trained on {tuple(want)}"
            )
    ids = list(clip_ids) if clip_ids is not None else list(fs.arrays[run.modalities[0]].clip_index)
    pres = presence(fs, ids)
    usable = [
        c
        for c, *ok in pres[["clip_id", *(f"{m}_present" for m in run.modalities)]].itertuples(
            index=False
        )
        if any(ok)
    ]
    extra: dict[str, Any] = {"presence": pres}
    if not usable:
        return _table(run, pres, None, None), extra
    dm = _datamodule(run, fs, usable, subjects)
    extra["speakers"] = dm.speakers
    bs = int(batch_size or run.cfg["data"].get("eval_batch_size") or 256)
    batches = dm.batches("predict", batch_size=bs)
    prog = Progress("predict", len(batches), "batches", enabled=progress)
    seqs, outs = [], []
    att: dict[str, dict[str, Any]] = {}
    try:
        for batch in batches:
            inp = {
                k: v
                for k, v in batch.items()
                if k in run.modalities or (k.endswith("_mask") and k[:-5] in run.modalities)
            }
            outs.append(run.model(inp).float())
            seqs.append(batch["index"])
            if attention:
                att.update(clip_attention(run, dm, batch))
            prog.update(1)
    finally:
        prog.close()
    res = dm.assemble(torch.cat(seqs), torch.cat(outs))
    if attention:
        extra["attention"] = att
    return _table(run, pres, res, dm), extra


def time_stride(model: torch.nn.Module, modality: str) -> int:
    """Input rows per attention step of ``modality``: the ``time_stride`` of its encoder (a
    branch of ``branches`` / ``branch``, or the ``audio_`` / ``visual_encoder``), else 1."""
    enc = None
    branches = getattr(model, "branches", None)
    if isinstance(branches, torch.nn.ModuleDict) and modality in branches:
        enc = getattr(branches[modality], "encoder", None)
    elif getattr(model, "modality", None) == modality and hasattr(model, "branch"):
        enc = getattr(model.branch, "encoder", None)
    else:
        for role in ("audio", "visual"):
            if getattr(model, role, None) == modality:
                enc = getattr(model, f"{role}_encoder", None)
    return int(getattr(enc, "time_stride", 1))


def clip_attention(run: Run, dm: Any, batch: Mapping[str, Tensor]) -> dict[str, dict[str, Any]]:
    """Per clip of the batch just predicted: ``{"attention": {m: weights [T'_m]}, "timing":
    {m: (row_times [T_m] s, row_mask [T_m])}, "strides": {m: int}}``, the arguments of
    ``fusion.plots.plot_attention``. Row times are the feature file's own timestamps of the rows
    the model saw (padding and masked rows: mask False). Frame tasks give {} (their attention is
    per window of one shared timeline); a modality whose attention length does not match its
    rows and encoder stride is left out with a warning rather than drawn at guessed times."""
    weights = getattr(run.model, "attention", None) or {}
    if not weights or run.task.level == "frame":
        return {}
    seq = batch["index"]
    where = dm.index.positions(seq)
    ids = [dm.index.clip_ids[i] for i in seq.cpu().numpy()]
    out: dict[str, dict[str, Any]] = {
        c: {"attention": {}, "timing": {}, "strides": {}} for c in ids
    }
    for m, w in weights.items():
        if m not in where or f"{m}_mask" not in batch:
            continue
        rows = dm.index.idx[m][where[m][0]].cpu().numpy()
        times = dm.arrays[m].timestamps[rows]
        mask = batch[f"{m}_mask"].cpu().numpy().astype(bool)
        stride = time_stride(run.model, m)
        w = w.detach().float().cpu().numpy()
        if w.ndim != 2 or w.shape[1] != -(-rows.shape[1] // stride):
            warnings.warn(
                f"attention of {m} has {w.shape[-1]} steps for {rows.shape[1]} rows at stride "
                f"{stride}: it cannot be placed in time and is not drawn",
                stacklevel=2,
            )
            continue
        for b, c in enumerate(ids):
            out[c]["attention"][m] = w[b]
            out[c]["timing"][m] = (times[b], mask[b])
            out[c]["strides"][m] = stride
    return {c: v for c, v in out.items() if v["attention"]}


def _frame_presence(dm: Any, res: Mapping[str, Any]) -> pd.DataFrame:
    """Per timeline frame: whether each modality had a usable row aligned to it."""
    idx = dm.index
    out = {}
    for m in dm.modalities:
        ok = idx.ok[m].clone()
        if m not in idx.aligned:
            ok &= dm.arrays[m].row_mask[idx.idx[m]]
        out[f"{m}_present"] = ok.cpu().numpy()
    df = pd.DataFrame(out)
    df.insert(0, "clip_id", [idx.clip_ids[i] for i in idx.lab_clip])
    df.insert(1, "time", idx.lab_time)
    return df


def _table(run: Run, pres: pd.DataFrame, res: Mapping[str, Any] | None, dm: Any) -> pd.DataFrame:
    """The output table; ``missing`` names absent modalities, ``flagged`` marks predictions
    from fewer modalities than the run was trained to work without."""
    mods = run.modalities
    info = pres.set_index("clip_id")
    missing = {c: [m for m in mods if not info.at[c, f"{m}_present"]] for c in info.index}
    flagged = {
        c: bool(miss) and (len(miss) == len(mods) or not set(miss) <= run.trained_without)
        for c, miss in missing.items()
    }
    task = run.task
    rng = (run.cfg.get("eval") or {}).get("clip_range")
    if res is not None and rng and "pred" in res:  # the range the run was scored in
        res = {**res, "pred": np.clip(np.asarray(res["pred"]), float(rng[0]), float(rng[1]))}
    if res is None:
        body = pd.DataFrame({"clip_id": list(info.index)})
    elif task.level == "frame":
        pred = np.asarray(res["pred"])
        body = pd.DataFrame({"clip_id": res["clip_ids"], "time": np.asarray(res["time"])})
        for j, t in enumerate(task.targets):  # type: ignore[attr-defined]
            body[t] = pred[:, j]
        smoothed = task.smoothed(pred, np.asarray(res["clip_pos"]), run.cfg.get("eval"))  # type: ignore[attr-defined]
        for t in smoothed[1] if smoothed is not None else []:
            body[f"{t}_smoothed"] = smoothed[0][:, task.targets.index(t)]  # type: ignore[attr-defined]
        fp = _frame_presence(dm, res)
        body = body.merge(fp, on=["clip_id", "time"], how="left", validate="one_to_one")
    elif hasattr(task, "classes"):
        scores = torch.from_numpy(np.asarray(res["scores"], np.float32)).softmax(-1).numpy()
        body = pd.DataFrame(
            {
                "clip_id": res["clip_ids"],
                "pred": [task.classes[i] for i in scores.argmax(1)],
                "top_p": scores.max(1),
            }
        )
        for j, c in enumerate(task.classes):
            body[f"p_{c}"] = scores[:, j]
    else:
        pred = np.asarray(res["pred"])
        body = pd.DataFrame({"clip_id": res["clip_ids"]})
        for j, t in enumerate(task.targets):  # type: ignore[attr-defined]
            body[t] = pred[:, j]
    order = {c: i for i, c in enumerate(info.index)}
    absent = [c for c in info.index if c not in set(body["clip_id"])]
    if absent:  # clips with nothing usable keep one (empty) row
        body = pd.concat([body, pd.DataFrame({"clip_id": absent})], ignore_index=True)
    body["missing"] = [";".join(missing[c]) for c in body["clip_id"]]
    body["flagged"] = [flagged[c] for c in body["clip_id"]]
    body = body.sort_values("clip_id", key=lambda s: s.map(order), kind="stable")
    return body.reset_index(drop=True)


# ----------------------------------------------------------------------------- outputs


def plot_clip(run: Run, table: pd.DataFrame, clip_id: str, path: Path) -> Path:
    """One PNG: the class probabilities (clip tasks), or the predicted trace over time with
    each modality's presence underneath (frame tasks)."""
    from avemo.fusion.plots import pyplot

    plt = pyplot()
    rows = table[table["clip_id"] == clip_id]
    task = run.task
    if task.level == "frame":
        fig, (a1, a2) = plt.subplots(
            2, 1, figsize=(8, 4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
        for t in task.targets:  # type: ignore[attr-defined]
            a1.plot(rows["time"], rows[t], label=t)
        a1.axhline(0, color="0.8", lw=0.8)
        a1.legend(loc="upper right", fontsize=8)
        a1.set_title(f"{clip_id}: predicted {' / '.join(task.targets)}", fontsize=9)  # type: ignore[attr-defined]
        mods = [m for m in run.modalities if f"{m}_present" in rows]
        img = np.array([rows[f"{m}_present"].fillna(False).to_numpy(float) for m in mods])
        t = rows["time"].to_numpy(float)
        if not np.isfinite(t).any():  # nothing usable in this clip: an empty figure says so
            img, t = np.zeros((len(mods), 1)), np.zeros(1)
        ext = (t[0], t[-1], -0.5, len(mods) - 0.5) if len(t) > 1 else None
        a2.imshow(
            img,
            aspect="auto",
            cmap="Greens",
            vmin=0,
            vmax=1,
            extent=ext,
            interpolation="nearest",
            origin="lower",
        )
        a2.set_yticks(range(len(mods)))
        a2.set_yticklabels(mods, fontsize=7)
        a2.set_xlabel("time (s)")
        a2.set_title("present (green) / missing", fontsize=7)
    else:
        fig, a1 = plt.subplots(figsize=(6, 3))
        row = rows.iloc[0]
        if hasattr(task, "classes"):
            names = list(task.classes)
            vals = [row.get(f"p_{c}") for c in names]
            a1.set_ylim(0, 1)
            a1.set_ylabel("probability")
            title = f"{clip_id}: {row.get('pred')}"
            if isinstance(row.get("label"), str):
                title += f" (true: {row['label']})"
        else:
            names = list(task.targets)  # type: ignore[attr-defined]
            vals = [row.get(t) for t in names]
            title = f"{clip_id}"
        a1.bar(names, [float(v) if v == v else 0.0 for v in vals], color="C0")
        if row.get("missing"):
            title += f" (no {row['missing']})"
        a1.set_title(title, fontsize=9)
        a1.tick_params(axis="x", labelsize=7, rotation=30)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
