"""Train / val / test partitions: the manifest's official split, k-fold, leave-subjects-out.

Fold assignment is deterministic (sorted ids, or a seeded shuffle) and written with every run
(``splits.json`` + ``folds.csv``) so published numbers can be re-run on the same folds.
Leave-subjects-out never puts one subject in two partitions. When the task has class labels,
folds are stratified by label (scikit-learn's ``StratifiedKFold`` / ``StratifiedGroupKFold``
semantics): corpora such as RAVDESS name their files by emotion, so contiguous chunks of
sorted ids would put classes in the test fold that training never saw. Whatever the method,
a validation or test partition holding a label that training lacks is refused
(``split.label_coverage``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avemo.fusion.config import ConfigError, SplitConfig, section

PARTITIONS = ("train", "val", "test")
_ALIASES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "devel": "val",
    "development": "val",
    "test": "test",
    "tst": "test",
    "eval": "test",
    "evaluation": "test",
}


def official_partition(split: object) -> str | None:
    """Map the manifest's split names (train/validation/dev/test ...) onto train/val/test."""
    if split is None or pd.isna(split):
        return None
    return _ALIASES.get(str(split).strip().lower())


def kfold_assign(
    clip_ids: list[str],
    k: int,
    shuffle: bool = False,
    seed: int = 0,
    labels: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Fold of each clip. With ``labels``: stratified (``StratifiedKFold`` over the sorted ids,
    shuffled with ``seed`` when asked), so every fold holds each class in proportion; without:
    sort ids (optionally shuffle with ``seed``), then cut into k chunks."""
    ids = sorted(clip_ids)
    if k < 2 or k > len(ids):
        raise ConfigError(f"split.k={k} needs 2 <= k <= number of clips ({len(ids)})")
    if labels is not None:
        from sklearn.model_selection import StratifiedKFold

        y = [labels[c] for c in ids]
        if k > max(pd.Series(y).value_counts()):
            raise ConfigError(
                f"split.k={k} is more folds than the largest class has clips; "
                "lower split.k or set split.stratify=false"
            )
        skf = StratifiedKFold(k, shuffle=shuffle, random_state=seed if shuffle else None)
        with warnings.catch_warnings():  # "least populated class has only n members": expected
            warnings.simplefilter("ignore", UserWarning)
            return {ids[i]: f for f, (_, test) in enumerate(skf.split(ids, y)) for i in test}
    if shuffle:
        ids = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return {
        cid: f
        for f, chunk in enumerate(np.array_split(np.array(ids, dtype=object), k))
        for cid in chunk
    }


def stratified_subject_assign(
    subjects: Mapping[str, str],
    labels: Mapping[str, str],
    k: int,
    shuffle: bool = False,
    seed: int = 0,
) -> dict[str, int]:
    """Fold of each subject, keeping each fold's class mix close to the corpus's
    (``StratifiedGroupKFold``: every clip of a subject in one fold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    ids = sorted(subjects)
    n_subjects = len(set(subjects.values()))
    if k < 2 or k > n_subjects:
        raise ConfigError(f"split.k={k} needs 2 <= k <= number of subjects ({n_subjects})")
    sgkf = StratifiedGroupKFold(k, shuffle=shuffle, random_state=seed if shuffle else None)
    groups = [subjects[c] for c in ids]
    fold_of: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for f, (_, test) in enumerate(sgkf.split(ids, [labels[c] for c in ids], groups)):
            fold_of.update({groups[i]: f for i in test})
    return fold_of


def subject_assign(
    subjects: Mapping[str, str], k: int, shuffle: bool = False, seed: int = 0
) -> dict[str, int]:
    """Fold of each subject, balancing clip counts (largest subject first into the emptiest fold)."""
    counts = pd.Series(list(subjects.values())).value_counts()
    names = sorted(counts.index, key=lambda s: (-counts[s], str(s)))
    if shuffle:
        rng = np.random.default_rng(seed)
        names = [names[i] for i in rng.permutation(len(names))]
    if k < 2 or k > len(names):
        raise ConfigError(f"split.k={k} needs 2 <= k <= number of subjects ({len(names)})")
    load = [0] * k
    fold_of: dict[str, int] = {}
    for s in names:
        f = min(range(k), key=lambda i: (load[i], i))
        fold_of[s] = f
        load[f] += int(counts[s])
    return fold_of


def make_splits(
    df: pd.DataFrame,
    split_cfg: SplitConfig | Mapping[str, Any],
    seed: int = 0,
    labels: Sequence[str] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Partition the manifest's clips.

    ``official``: the manifest's split column. ``kfold`` / ``subjects``: fold ``split.fold`` is
    the test partition; ``split.val`` picks validation as the next fold (``next_fold``) or the
    test fold itself (``test``: LFAN-style "validation on the held-out fold"). ``split.pool:
    trainval`` keeps the manifest's official test clips out of the folds. ``labels`` (one per
    manifest row; classification tasks) stratify the folds unless ``split.stratify`` is false,
    and are checked for coverage. ``notes`` collects what was decided on the user's behalf.
    Returns ``{"partitions": {train/val/test: [clip ids]}, "fold_of": {clip: fold}, ...}``.
    ``split_cfg``: the ``split`` section (a dict is validated into one, schema defaults filled).
    """
    split = section(SplitConfig, split_cfg, "split")
    method = split.method
    ids = df["clip_id"].astype(str).tolist()
    parts: dict[str, list[str]] = {p: [] for p in PARTITIONS}
    fold_of: dict[str, int] = {}
    label_of = dict(zip(ids, map(str, labels), strict=True)) if labels is not None else None
    notes = notes if notes is not None else []
    if method == "official":
        if "split" not in df.columns:
            raise ConfigError("split.method=official needs a split column in the manifest")
        unknown = sorted({str(s) for s in df["split"].dropna() if official_partition(s) is None})
        if unknown:
            raise ConfigError(f"manifest split values {unknown} are not train/val/test names")
        for cid, s in zip(ids, df["split"], strict=True):
            p = official_partition(s)
            if p:
                parts[p].append(cid)
        if not parts["val"]:
            parts["val"] = list(parts["test"])
        return _result(method, split, parts, fold_of, df, label_of, notes)
    pool_df = df
    if split.pool == "trainval" and "split" in df.columns:
        pool_df = df[df["split"].map(official_partition) != "test"]
    k, fold = split.k, split.fold
    if not 0 <= fold < k:
        raise ConfigError(f"split.fold={fold} must be in [0, {k})")
    shuffle = split.shuffle
    pool_ids = pool_df["clip_id"].astype(str).tolist()
    strat = {c: label_of[c] for c in pool_ids} if label_of is not None and split.stratify else None
    if method == "kfold":
        manifest_folds = _manifest_folds(pool_df, k, split.use_manifest_folds, notes)
        if manifest_folds is not None:
            fold_of = manifest_folds
        else:
            fold_of = kfold_assign(pool_ids, k, shuffle, seed, strat)
    elif method == "subjects":
        subj = dict(zip(pool_ids, pool_df["subject"].astype(str), strict=True))
        if strat is not None:
            sfold = stratified_subject_assign(subj, strat, k, shuffle, seed)
        else:
            sfold = subject_assign(subj, k, shuffle, seed)
        fold_of = {c: sfold[s] for c, s in subj.items()}
    else:
        raise ConfigError(f"split.method must be official, kfold or subjects, got {method!r}")
    val_fold = fold if split.val == "test" else (fold + 1) % k
    for cid in sorted(fold_of):
        f = fold_of[cid]
        if f == fold:
            parts["test"].append(cid)
        if f == val_fold:
            parts["val"].append(cid)
        if f not in (fold, val_fold):
            parts["train"].append(cid)
    return _result(method, split, parts, fold_of, df, label_of, notes)


def _manifest_folds(
    df: pd.DataFrame, k: int, use: bool | str, notes: list[str]
) -> dict[str, int] | None:
    """The manifest's ``fold`` column as folds (value mod k), or None to make folds here.

    ``use_manifest_folds: auto`` takes the column when it is complete and gives k distinct
    folds, and otherwise says why it was not used; ``true`` requires it; ``false`` ignores it.
    An adapter's folds follow its corpus's protocol (RAVDESS: actors), so one actor's clips all
    carry one fold value: a column no k-fold can be made from.
    """
    if use is False or use == "false":
        return None
    have = "fold" in df.columns and bool(df["fold"].notna().all())
    values = sorted({int(f) % k for f in df["fold"]}) if have else []
    if have and len(values) == k:
        raw = sorted({int(f) for f in df["fold"]})
        if len(raw) != k:  # e.g. 10 folds read as 5: two of them per fold, said, not silent
            notes.append(
                f"split: the manifest's fold column holds {len(raw)} values {raw[:10]}; "
                f"split.k={k} folds are the values mod {k} "
                f"(fold 0 = {[v for v in raw if v % k == 0][:5]}); set split.k={len(raw)} "
                "for one fold per value"
            )
        return {str(c): int(f) % k for c, f in zip(df["clip_id"], df["fold"], strict=True)}
    if not have:
        why = (
            "the manifest has no fold column"
            if "fold" not in df.columns
            else "the manifest's fold column has empty cells"
        )
    else:
        raw = sorted({int(f) for f in df["fold"]})
        why = (
            f"the manifest's fold column holds {len(raw)} distinct value(s) {raw[:10]}, "
            f"giving {len(values)} of the {k} folds split.k asks for"
        )
    if use is True or use == "true":
        raise ConfigError(
            f"split.use_manifest_folds=true but {why}; fill the manifest's fold column "
            "(e.g. one value per subject group), lower split.k, or set "
            "split.use_manifest_folds=false to make folds from the clips"
        )
    if "fold" in df.columns:
        notes.append(
            f"split: {why}; made {k} folds from the clips instead "
            "(split.use_manifest_folds=true makes this an error)"
        )
    return None


def _result(
    method: str,
    cfg: SplitConfig,
    parts: dict[str, list[str]],
    fold_of: dict[str, int],
    df: pd.DataFrame,
    label_of: Mapping[str, str] | None,
    notes: list[str],
) -> dict[str, Any]:
    if not parts["train"]:
        raise ConfigError(
            f"split {method}: the training partition is empty (with split.val=next_fold, k must be >= 3)"
        )
    subj = dict(zip(df["clip_id"].astype(str), df["subject"].astype(str), strict=True))
    out = {
        "method": method,
        "k": cfg.k,
        "fold": cfg.fold,
        "val": cfg.val,
        "partitions": parts,
        "fold_of": fold_of,
        "subjects": {p: sorted({subj[c] for c in ids}) for p, ids in parts.items()},
    }
    if label_of is not None:
        counts = {
            p: dict(
                sorted(pd.Series([label_of[c] for c in ids], dtype=object).value_counts().items())
            )
            for p, ids in parts.items()
        }
        out["label_counts"] = counts
        check_label_coverage(counts, cfg.label_coverage, notes)
    return out


def check_label_coverage(
    counts: Mapping[str, Mapping[str, int]], mode: str, notes: list[str]
) -> None:
    """Refuse (``error``) or note (``warn``) a val/test label that the training partition lacks:
    the model can never predict it, so the scores would measure the split, not the model."""
    train = set(counts["train"])
    unseen = {p: sorted(set(counts[p]) - train) for p in ("val", "test") if set(counts[p]) - train}
    if not unseen:
        return
    table = "; ".join(
        f"{p}: " + ", ".join(f"{lab}={n}" for lab, n in counts[p].items()) for p in PARTITIONS
    )
    what = "; ".join(f"{p} holds {', '.join(labs)}" for p, labs in unseen.items())
    msg = f"split: {what}, which the training partition lacks (clips per label: {table})"
    if mode == "warn":
        notes.append(msg + " - kept (split.label_coverage=warn)")
        return
    raise ConfigError(
        msg + ". Use a stratified split (split.stratify=true, the default), other "
        "folds, or split.label_coverage=warn to train anyway"
    )


def subject_leaks(splits: Mapping[str, Any], df: pd.DataFrame) -> dict[str, list[str]]:
    """Subjects found in both train and another partition (empty for leave-subjects-out)."""
    subj = dict(zip(df["clip_id"].astype(str), df["subject"].astype(str), strict=True))
    train = {subj[c] for c in splits["partitions"]["train"]}
    return {p: sorted(train & {subj[c] for c in splits["partitions"][p]}) for p in ("val", "test")}


def write_splits(
    splits: Mapping[str, Any], df: pd.DataFrame, out_dir: str | os.PathLike[str]
) -> Path:
    """``splits.json`` (partitions, subjects, method) and ``folds.csv`` (clip, subject, fold, partition)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "splits.json").write_text(
        json.dumps({k: v for k, v in splits.items() if k != "fold_of"}, indent=1)
    )
    part_of = {c: p for p in PARTITIONS for c in splits["partitions"][p] if c not in ()}
    for c in splits["partitions"]["val"]:  # val may equal test; report it as test
        part_of.setdefault(c, "val")
    rows = pd.DataFrame(
        {
            "clip_id": df["clip_id"].astype(str),
            "subject": df["subject"].astype(str),
            "fold": [splits["fold_of"].get(str(c), pd.NA) for c in df["clip_id"]],
            "partition": [part_of.get(str(c), "") for c in df["clip_id"]],
        }
    )
    rows.to_csv(out / "folds.csv", index=False)
    return out / "splits.json"
