"""Per-speaker feature normalisation (``data.speaker_norm``): speaker-independent emotion
recognition's standard remedy for voices that differ more between speakers than between emotions
-- and its failure mode: a speaker whose clips are nearly all one emotion loses that emotion when
z-normalised by their own statistics. So the option has four values:

* ``false`` / ``off``: none;
* ``true`` / ``speaker``: every column of a stream z-normalised per speaker with the mean and
  standard deviation of that speaker's OWN valid rows (all of the speaker's clips the run uses);
* ``shrink``: the same with the speaker's mean and variance shrunk toward the training
  speakers' pooled ones by the speaker's number of clips ``n``: weight ``w = n / (n + prior)``
  (``data.speaker_norm_prior`` clips, default 10), ``mean = w * mean_s + (1 - w) * mean_g``,
  ``var = w * var_s + (1 - w) * var_g``. A speaker with few clips stays near the global
  standardisation instead of being normalised into noise, and a column constant within one
  speaker keeps the pooled scale;
* ``auto``: one of the three chosen from the TRAINING speakers only, by inner leave-speakers-out
  CV (``choose``): a balanced logistic regression on each clip's masked per-stream mean and
  standard deviation (a linear model on clip statistics, like the ``descriptors`` recipe), scored
  by mean inner UAR. ``data.speaker_norm_rule`` says how: ``1se`` (default) takes the earliest of
  off, shrink, speaker whose mean inner UAR is within one standard error (of the paired per-fold
  differences) of the best -- normalising must earn its place beyond the inner folds' noise;
  ``best`` takes the best mean (ties to the earlier). Corpora where every speaker acts every
  emotion pick normalisation; corpora where speakers show one or two emotions do not.

``data.speaker_norm_only`` names streams used only when their clips are normalised per speaker
(``speaker`` / ``shrink``; ``data.speaker_norm_only_modes`` narrows that, e.g. to ``[speaker]``):
under any other mode their rows are masked (``gated``), in training, in the inner CV that chooses
the mode and in ``avemo predict``. ``shrink`` keeps part of a speaker's own mean (weight
``n / (n + prior)``), so a speaker embedding shrunk still partly tells who speaks. For a speaker
embedding (``speaker_ge2e``) normalised per speaker what is left is how a speaker's clips differ from each other; un-normalised
it tells who speaks, which on corpora where speakers show one or two emotions is a shortcut that
does not carry to new speakers (measured: docs/benchmarks/emodb.md).

No mode reads a label to normalise, and a speaker's statistics are its own unlabelled clips
(transductive per speaker: at test time a test speaker's clips, ``subject`` column of the
manifest, are normalised together). What a run chose is written to ``speaker_norm.json`` (and the
pooled statistics shrinkage needs to ``speaker_norm.npz``) in its folder; ``avemo predict``
normalises new clips the same way, per speaker. Normalisation with training statistics
(``data.normalize``) still follows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avemo.fusion.config import DataConfig, RunConfig, run_config
from avemo.fusion.features import FeatureArrays

log = logging.getLogger(__name__)

EPS = 1e-6
MODES = ("off", "shrink", "speaker")  # auto's candidates, in tie-break order
#: modes under which ``data.speaker_norm_only`` streams are used (its default)
ONLY_MODES: tuple[str, ...] = tuple(DataConfig.model_fields["speaker_norm_only_modes"].default)
#: clips at which a speaker's own statistics weigh half (``data.speaker_norm_prior``'s default)
DEFAULT_PRIOR: float = DataConfig.model_fields["speaker_norm_prior"].default
MIN_CLIPS = 10  # fewer clips than this: per-speaker statistics are noisy (predict warns)
INNER_FOLDS = 5
RULES = ("1se", "best")
DEFAULT_RULE: str = DataConfig.model_fields["speaker_norm_rule"].default
RECORD_FILE = "speaker_norm.json"
REFERENCE_FILE = "speaker_norm.npz"


def mode_of(value: Any) -> str:
    """``data.speaker_norm`` as one of off / speaker / shrink / auto (booleans: off / speaker)."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "speaker"
    return str(value)


def normalise_groups(
    x: np.ndarray,
    valid: np.ndarray,
    group: np.ndarray,
    counts: Mapping[Any, int] | None = None,
    prior: float = 0.0,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``x [N, D]`` with each column z-normalised within each group over the group's valid rows
    (``valid [N]`` bool, ``group [N]`` any labels; invalid rows are normalised with their
    group's statistics too). With ``prior > 0`` and ``reference = (mean, var)`` the group's mean
    and variance are shrunk toward the reference by ``w = counts[g] / (counts[g] + prior)``
    (``counts``: clips per group). A column whose (shrunk) scale is rounding noise becomes
    exactly 0 there: left as noise, a later standardisation over speakers where it is constant
    would blow that noise up (seen on ComParE functionals); float64 sums."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    pooled = reference if prior > 0 else None  # the statistics to shrink toward, if any
    for g in np.unique(group):
        rows = group == g
        ref = x[rows & valid]
        if len(ref) == 0:
            if pooled is None:
                out[rows] = x[rows]
                continue
            mean, var = pooled
        else:
            mean, var = ref.mean(0), ref.var(0)
            if pooled is not None:
                n = float(counts[g]) if counts is not None else float(len(ref))
                w = n / (n + float(prior))
                mean = w * mean + (1.0 - w) * pooled[0]
                var = w * var + (1.0 - w) * pooled[1]
        std = np.sqrt(var)
        keep = std > EPS * np.maximum(1.0, np.abs(mean))  # constant up to rounding noise -> 0
        out[rows] = np.where(keep, (x[rows] - mean) / np.where(keep, std, 1.0), 0.0)
    return out


def _rows(arr: FeatureArrays, clips: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    idx, n = [], []
    for c in clips:
        lo, hi = arr.rows_of(c)
        idx.append(np.arange(lo, hi))
        n.append(hi - lo)
    return (np.concatenate(idx) if idx else np.zeros(0, np.int64)), n


def _flat(arr: FeatureArrays, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = arr.values.reshape(arr.values.shape[0], -1)
    x = flat[torch.from_numpy(rows).to(flat.device)].double().cpu().numpy()
    return x, arr.row_mask.cpu().numpy()[rows]


def reference_statistics(arr: FeatureArrays, clips: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled per-column mean and variance over the valid rows of ``clips`` (the training
    speakers' clips: what ``shrink`` pulls each speaker toward)."""
    rows, _ = _rows(arr, clips)
    x, valid = _flat(arr, rows)
    ref = x[valid]
    if len(ref) == 0:
        return np.zeros(x.shape[1]), np.ones(x.shape[1])
    return ref.mean(0), ref.var(0)


def speaker_normalised(
    arr: FeatureArrays,
    clip_subject: Mapping[str, str],
    clips: Sequence[str] | None = None,
    prior: float = 0.0,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> FeatureArrays:
    """A copy of ``arr`` whose rows of each speaker's clips are z-normalised per speaker
    (``clip_subject``: clip id -> speaker; only ``clips`` -- default: every clip the mapping
    names -- are used and changed); ``prior`` / ``reference``: shrinkage by the speaker's clip
    count (``normalise_groups``). The input (possibly shared through the feature cache) is left
    untouched."""
    clips = list(clip_subject) if clips is None else list(clips)
    rows, n = _rows(arr, clips)
    grp = np.asarray(
        [str(clip_subject[c]) for c, k in zip(clips, n, strict=True) for _ in range(k)],
        dtype=object,
    )
    counts: dict[str, int] = {}
    for c in clips:
        counts[str(clip_subject[c])] = counts.get(str(clip_subject[c]), 0) + 1
    x, valid = _flat(arr, rows)
    z = normalise_groups(x, valid, grp, counts, prior, reference)
    values = arr.values.clone()
    vflat = values.view(values.shape[0], -1)
    vflat[torch.from_numpy(rows).to(values.device)] = torch.from_numpy(z).to(
        values.device, values.dtype
    )
    return dataclasses.replace(arr, values=values)


def normalised_arrays(
    arrays: Mapping[str, FeatureArrays],
    clip_subject: Mapping[str, str],
    mode: str,
    prior: float = DEFAULT_PRIOR,
    reference: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, FeatureArrays]:
    """Every stream normalised per speaker in ``mode`` (off / speaker / shrink); ``reference``
    per stream is needed for shrink."""
    if mode == "off":
        return dict(arrays)
    if mode == "speaker":
        return {m: speaker_normalised(a, clip_subject) for m, a in arrays.items()}
    if mode == "shrink":
        if reference is None:
            raise ValueError("speaker_norm shrink needs the pooled reference statistics")
        return {
            m: speaker_normalised(a, clip_subject, prior=prior, reference=reference[m])
            for m, a in arrays.items()
        }
    raise ValueError(f"unknown speaker_norm mode {mode!r}")


def gated(
    arrays: Mapping[str, FeatureArrays],
    mode: str,
    only: Sequence[str] = (),
    used_under: Sequence[str] = ONLY_MODES,
) -> dict[str, FeatureArrays]:
    """``arrays`` with the streams of ``only`` masked (every row invalid, values zero) when
    ``mode`` is not one of ``used_under``; otherwise unchanged (``data.speaker_norm_only`` /
    ``data.speaker_norm_only_modes``)."""
    out = dict(arrays)
    if mode in used_under:
        return out
    for m in only:
        if m in out:
            a = out[m]
            out[m] = dataclasses.replace(
                a, values=torch.zeros_like(a.values), row_mask=torch.zeros_like(a.row_mask)
            )
    return out


def clip_statistics(arrays: Mapping[str, FeatureArrays], clips: Sequence[str]) -> np.ndarray:
    """``[n_clips, D]``: each stream's masked per-column mean and standard deviation per clip
    (what ``choose`` scores; one row per clip in ``clips`` order)."""
    parts = []
    for a in arrays.values():
        rows, n = _rows(a, clips)
        x, valid = _flat(a, rows)
        out = np.zeros((len(clips), 2 * x.shape[1]))
        start = 0
        for i, k in enumerate(n):
            v = x[start : start + k][valid[start : start + k]]
            start += k
            if len(v):
                out[i] = np.concatenate([v.mean(0), v.std(0)])
        parts.append(out)
    return np.nan_to_num(np.concatenate(parts, 1))


def inner_uar(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int = INNER_FOLDS
) -> list[float]:
    """UAR per inner fold: GroupKFold over speakers (at most ``n_folds``), standardise on the inner
    training clips, clip at ±5, balanced logistic regression (C = 0.1: a fixed prior for a few
    hundred clips, not tuned)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold

    k = min(n_folds, len(set(groups)))
    scores = []
    for tr, te in GroupKFold(n_splits=k).split(x, y, groups):
        mean, std = x[tr].mean(0), x[tr].std(0)
        std = np.where(std > EPS, std, 1.0)
        xt, xe = (np.clip((x[i] - mean) / std, -5, 5) for i in (tr, te))
        if len(set(y[tr])) < 2:
            pred = np.full(len(te), y[tr][0])
        else:
            clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=300)
            clf.fit(xt, y[tr])
            pred = clf.predict(xe)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a predicted class absent from the inner test fold
            scores.append(float(balanced_accuracy_score(y[te], pred)))
    return scores


def pick(table: Sequence[Mapping[str, Any]], rule: str = DEFAULT_RULE) -> str:
    """The mode a ``choose`` table gives under ``rule``: ``best`` -- the highest mean inner UAR,
    ties to the earlier row; ``1se`` -- the earliest row whose mean is at most one standard error
    below the best's, the standard error of the per-fold differences to the best
    (``std(d, ddof=1) / sqrt(k)``)."""
    if rule not in RULES:
        raise ValueError(f"speaker_norm rule must be one of {RULES}, got {rule!r}")
    best = max(range(len(table)), key=lambda i: (table[i]["inner_uar"], -i))
    if rule == "best":
        return str(table[best]["mode"])
    top = np.asarray(table[best]["fold_uar"], np.float64)
    for r in table:
        d = top - np.asarray(r["fold_uar"], np.float64)
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        if d.mean() <= se + 1e-12:
            return str(r["mode"])
    return str(table[best]["mode"])


def choose(
    arrays: Mapping[str, FeatureArrays],
    clip_subject: Mapping[str, str],
    labels: Mapping[str, str],
    train: Sequence[str],
    prior: float = DEFAULT_PRIOR,
    modes: Sequence[str] = MODES,
    n_folds: int = INNER_FOLDS,
    rule: str = DEFAULT_RULE,
    only: Sequence[str] = (),
    used_under: Sequence[str] = ONLY_MODES,
) -> tuple[str, list[dict[str, Any]]]:
    """``auto``: the mode the inner leave-speakers-out CV over the ``train`` clips (their speakers
    only; no other clip is read) gives under ``rule`` (``pick``); also the per-mode table. Each
    mode is scored on the streams it would train on (``only``: masked under a mode not in
    ``used_under``, ``gated``).
    Fewer than 2 training speakers: ``off``."""
    train = list(train)
    groups = np.asarray([str(clip_subject[c]) for c in train])
    if len(set(groups)) < 2:
        return "off", []
    sub = {c: clip_subject[c] for c in train}
    ref = {m: reference_statistics(a, train) for m, a in arrays.items()}
    y = np.asarray([str(labels[c]) for c in train])
    table = []
    for mode in modes:
        normed = gated(normalised_arrays(arrays, sub, mode, prior, ref), mode, only, used_under)
        sc = inner_uar(clip_statistics(normed, train), y, groups, n_folds)
        table.append(
            {
                "mode": mode,
                "inner_uar": float(np.mean(sc)),
                "inner_folds": len(sc),
                "fold_uar": [float(s) for s in sc],
            }
        )
    return pick(table, rule), table


def apply(
    arrays: Mapping[str, FeatureArrays],
    clip_subject: Mapping[str, str],
    requested: Any,
    train: Sequence[str],
    labels: Mapping[str, str] | None,
    prior: float = DEFAULT_PRIOR,
    rule: str = DEFAULT_RULE,
    only: Sequence[str] = (),
    used_under: Sequence[str] = ONLY_MODES,
) -> tuple[dict[str, FeatureArrays], dict[str, Any]]:
    """What the datamodule does: the mode (``auto`` chosen on ``train`` clips only), every clip
    of ``clip_subject`` normalised per speaker in it, and the record written to the run folder
    (``record`` keys: requested, mode, prior, inner, speakers' clip counts; ``reference``: the
    pooled training statistics per stream)."""
    req = mode_of(requested)
    mode = req
    only = [m for m in only if m in arrays]  # a stream the run dropped: nothing to gate
    table: list[dict[str, Any]] = []  # auto: the inner CV's per-mode scores
    if req == "auto":
        if labels is None:
            raise ValueError("data.speaker_norm: auto needs class labels (a classification task)")
        mode, table = choose(
            arrays, clip_subject, labels, train, prior, rule=rule, only=only, used_under=used_under
        )
    ref = {m: reference_statistics(a, train) for m, a in arrays.items()}
    counts: dict[str, int] = {}
    for s in clip_subject.values():
        counts[str(s)] = counts.get(str(s), 0) + 1
    out = gated(normalised_arrays(arrays, clip_subject, mode, prior, ref), mode, only, used_under)
    record = {
        "requested": req,
        "mode": mode,
        "prior": float(prior),
        "inner": table,
        "rule": rule if req == "auto" else None,
        "chosen_on": "training speakers only" if req == "auto" else "fixed by the config",
        "speaker_clips": dict(sorted(counts.items())),
        "few_clips": MIN_CLIPS,
        "only_normalised": list(only),  # data.speaker_norm_only
        "only_modes": list(used_under),  # data.speaker_norm_only_modes
        "masked": [] if mode in used_under else list(only),
    }
    return out, {"record": record, "reference": ref}


def describe(record: Mapping[str, Any]) -> str:
    """One line for the run's notes."""
    masked = record.get("masked") or []
    tail = (
        f"; {', '.join(masked)} masked (data.speaker_norm_only: used only under "
        f"{' / '.join(record.get('only_modes', ONLY_MODES))})"
        if masked
        else ""
    )
    if record["requested"] == "auto":
        scores = ", ".join(f"{r['mode']} {r['inner_uar']:.3f}" for r in record["inner"])
        return (
            f"data.speaker_norm auto chose {record['mode']} on the training speakers "
            f"(rule {record.get('rule')}; inner leave-speakers-out UAR: {scores or 'fewer than 2 speakers'})"
            + tail
        )
    return f"features normalised per speaker (data.speaker_norm: {record['mode']})" + tail


def save(result: Mapping[str, Any] | None, run_dir: str | Path) -> None:
    """``speaker_norm.json`` (the record) and ``speaker_norm.npz`` (pooled reference per stream)."""
    if not result:
        return
    run_dir = Path(run_dir)
    (run_dir / RECORD_FILE).write_text(json.dumps(result["record"], indent=1))
    arrays = {}
    for m, (mean, var) in result["reference"].items():
        arrays[f"{m}/mean"], arrays[f"{m}/var"] = np.asarray(mean), np.asarray(var)
    np.savez(run_dir / REFERENCE_FILE, allow_pickle=False, **arrays)  # numeric, as load reads it


def load(
    run_dir: str | Path, cfg: RunConfig | Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A run's record and reference; a run from before the record (``speaker_norm: true``)
    normalised every speaker by its own statistics."""
    run_dir = Path(run_dir)
    if not (run_dir / RECORD_FILE).is_file():
        mode = mode_of(run_config(cfg).data.speaker_norm)
        return {
            "requested": mode,
            "mode": "speaker" if mode != "off" else "off",
            "prior": DEFAULT_PRIOR,
            "inner": [],
        }, {}
    record = json.loads((run_dir / RECORD_FILE).read_text())
    ref: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if (run_dir / REFERENCE_FILE).is_file():
        with np.load(run_dir / REFERENCE_FILE, allow_pickle=False) as z:
            for key in z.files:
                m = key.rsplit("/", 1)[0]
                ref[m] = (z[f"{m}/mean"], z[f"{m}/var"])
    return record, ref
