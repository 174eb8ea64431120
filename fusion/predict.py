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

What is task-shaped is the run's task's (``fusion.tasks``): the inputs over new clips
(``Task.unlabelled_index``: one sequence per clip with the run's ``max_rows``, or windows over
the timeline of the run's first modality with rows, since new clips have no annotation), the
table's columns (``Task.unlabelled_table``) and the per-clip figure (``Task.plot_clip``).
Clips missing a modality are predicted from what they have; the table flags them when the
run never trained without that modality (``data.modality_dropout`` = 0 and no non-ok clips
kept with ``data.non_ok: keep``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from avemo.fusion import speaker_norm as sn
from avemo.fusion.datamodule import CachedFeatureDataModule
from avemo.fusion.features import FeatureFiles
from avemo.fusion.run import Run, RunFolderError
from avemo.progress import Progress


class SpeakerNormWarning(UserWarning):
    """A speaker's clips are too few for reliable per-speaker statistics."""


# ----------------------------------------------------------------------------- inputs


def speaker_normalise(
    run: Run, fs: FeatureFiles, ids: Sequence[str], subjects: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The new clips normalised per speaker the way the run was trained (its recorded mode);
    ``subjects``: clip -> speaker (clips it does not name are one speaker, ``predict``). Warns
    (``SpeakerNormWarning``) for a speaker with fewer clips than ``speaker_norm.MIN_CLIPS``.
    Returns clip -> speaker used ({} when the run does not normalise per speaker)."""
    record = getattr(run, "speaker_norm", None)
    if not record:  # no record read: a run from before it normalised every speaker by its own
        record = {"mode": "off" if sn.mode_of(run.cfg.data.speaker_norm) == "off" else "speaker"}
    mode = record["mode"]
    # streams used only when normalised (under these modes) are masked, as in training
    only = run.cfg.data.speaker_norm_only
    used_under = record.get("only_modes") or run.cfg.data.speaker_norm_only_modes
    if mode == "off":
        fs.arrays = sn.gated(fs.arrays, mode, only, used_under)
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
    fs.arrays = sn.gated(
        sn.normalised_arrays(
            fs.arrays, who, mode, float(record.get("prior", sn.DEFAULT_PRIOR)), ref
        ),
        mode,
        only,
        used_under,
    )
    return who


def _datamodule(
    run: Run, fs: FeatureFiles, ids: list[str], subjects: Mapping[str, str] | None = None
) -> CachedFeatureDataModule:
    """A datamodule over the new clips: the run's task, statistics and batching, partition
    ``predict`` (no manifest, no split: nothing here reads training data); features normalised
    per speaker first when the run was (``speaker_normalise``)."""
    speakers = speaker_normalise(run, fs, ids, subjects)
    return CachedFeatureDataModule.unlabelled(
        run.cfg, run.task, fs, run.stats, ids, run.device, speakers
    )


def presence(fs: FeatureFiles, ids: Sequence[str]) -> pd.DataFrame:
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
    data = run.cfg.data.model_copy(
        update={
            "features": {m: str(files[m]) for m in run.modalities},
            "non_ok": "keep",
            "expect": {},
        }
    )
    fs = FeatureFiles(data, run.device)
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
    bs = batch_size or run.cfg.data.eval_batch_size
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


def clip_attention(
    run: Run, dm: CachedFeatureDataModule, batch: Mapping[str, Tensor]
) -> dict[str, dict[str, Any]]:
    """Per clip of the batch just predicted: ``{"attention": {m: weights [T'_m]}, "timing":
    {m: (row_times [T_m] s, row_mask [T_m])}, "strides": {m: int}}``, the arguments of
    ``fusion.plots.plot_attention``. Row times are the feature file's own timestamps of the rows
    the model saw (padding and masked rows: mask False). Frame tasks give {} (their attention is
    per window of one shared timeline); a modality whose attention length does not match its
    rows and encoder stride is left out with a warning rather than drawn at guessed times."""
    weights = getattr(run.model, "attention", None) or {}
    if not weights or not run.task.attention_per_clip:
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


def _table(
    run: Run,
    pres: pd.DataFrame,
    res: Mapping[str, Any] | None,
    dm: CachedFeatureDataModule | None,
) -> pd.DataFrame:
    """The output table; ``missing`` names absent modalities, ``flagged`` marks predictions
    from fewer modalities than the run was trained to work without."""
    mods = run.modalities
    info = pres.set_index("clip_id")
    missing = {c: [m for m in mods if not info.at[c, f"{m}_present"]] for c in info.index}
    flagged = {
        c: bool(miss) and (len(miss) == len(mods) or not set(miss) <= run.trained_without)
        for c, miss in missing.items()
    }
    if res is None:
        body = pd.DataFrame({"clip_id": list(info.index)})
    else:
        body = run.task.unlabelled_table(res, run.cfg.eval, dm)
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
    """One PNG of a clip's rows of ``predict_files``' table, drawn by the run's task
    (``Task.plot_clip``: class probabilities, target values, or traces with presence)."""
    rows = table[table["clip_id"] == clip_id]
    return run.task.plot_clip(rows, clip_id, run.modalities, path)
