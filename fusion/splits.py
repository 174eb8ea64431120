"""Train / val / test partitions: the manifest's official split, k-fold, leave-subjects-out.

Fold assignment is deterministic (sorted ids, or a seeded shuffle) and written with every run
(``splits.json`` + ``folds.csv``) so published numbers can be re-run on the same folds.
Leave-subjects-out never puts one subject in two partitions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avemo.fusion.config import ConfigError

PARTITIONS = ("train", "val", "test")
_ALIASES = {
    "train": "train", "training": "train", "trn": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val", "devel": "val",
    "development": "val",
    "test": "test", "tst": "test", "eval": "test", "evaluation": "test",
}


def official_partition(split: object) -> str | None:
    """Map the manifest's split names (train/validation/dev/test ...) onto train/val/test."""
    if split is None or pd.isna(split):
        return None
    return _ALIASES.get(str(split).strip().lower())


def kfold_assign(clip_ids: list[str], k: int, shuffle: bool = False, seed: int = 0) -> dict[str, int]:
    """Fold of each clip: sort ids (optionally shuffle with ``seed``), then cut into k chunks."""
    ids = sorted(clip_ids)
    if k < 2 or k > len(ids):
        raise ConfigError(f"split.k={k} needs 2 <= k <= number of clips ({len(ids)})")
    if shuffle:
        ids = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return {cid: f for f, chunk in enumerate(np.array_split(np.array(ids, dtype=object), k)) for cid in chunk}


def subject_assign(subjects: Mapping[str, str], k: int, shuffle: bool = False, seed: int = 0) -> dict[str, int]:
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


def make_splits(df: pd.DataFrame, split_cfg: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """Partition the manifest's clips.

    ``official``: the manifest's split column. ``kfold`` / ``subjects``: fold ``split.fold`` is
    the test partition; ``split.val`` picks validation as the next fold (``next_fold``) or the
    test fold itself (``test``: LFAN-style "validation on the held-out fold"). ``split.pool:
    trainval`` keeps the manifest's official test clips out of the folds.
    Returns ``{"partitions": {train/val/test: [clip ids]}, "fold_of": {clip: fold}, ...}``.
    """
    method = split_cfg.get("method", "official")
    ids = df["clip_id"].astype(str).tolist()
    parts: dict[str, list[str]] = {p: [] for p in PARTITIONS}
    fold_of: dict[str, int] = {}
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
        return _result(method, split_cfg, parts, fold_of, df)
    pool_df = df
    if split_cfg.get("pool", "all") == "trainval" and "split" in df.columns:
        pool_df = df[df["split"].map(official_partition) != "test"]
    k, fold = int(split_cfg.get("k", 5)), int(split_cfg.get("fold", 0))
    if not 0 <= fold < k:
        raise ConfigError(f"split.fold={fold} must be in [0, {k})")
    shuffle = bool(split_cfg.get("shuffle", False))
    if method == "kfold":
        if split_cfg.get("use_manifest_folds", True) and "fold" in pool_df.columns and pool_df["fold"].notna().all():
            fold_of = {str(c): int(f) % k for c, f in zip(pool_df["clip_id"], pool_df["fold"], strict=True)}
        else:
            fold_of = kfold_assign(pool_df["clip_id"].astype(str).tolist(), k, shuffle, seed)
    elif method == "subjects":
        subj = dict(zip(pool_df["clip_id"].astype(str), pool_df["subject"].astype(str), strict=True))
        sfold = subject_assign(subj, k, shuffle, seed)
        fold_of = {c: sfold[s] for c, s in subj.items()}
    else:
        raise ConfigError(f"split.method must be official, kfold or subjects, got {method!r}")
    val_fold = fold if split_cfg.get("val", "next_fold") == "test" else (fold + 1) % k
    for cid in sorted(fold_of):
        f = fold_of[cid]
        if f == fold:
            parts["test"].append(cid)
        if f == val_fold:
            parts["val"].append(cid)
        if f not in (fold, val_fold):
            parts["train"].append(cid)
    return _result(method, split_cfg, parts, fold_of, df)


def _result(method: str, cfg: Mapping[str, Any], parts: dict[str, list[str]], fold_of: dict[str, int],
            df: pd.DataFrame) -> dict[str, Any]:
    if not parts["train"]:
        raise ConfigError(f"split {method}: the training partition is empty (with split.val=next_fold, k must be >= 3)")
    subj = dict(zip(df["clip_id"].astype(str), df["subject"].astype(str), strict=True))
    return {
        "method": method,
        "k": cfg.get("k"),
        "fold": cfg.get("fold"),
        "val": cfg.get("val"),
        "partitions": parts,
        "fold_of": fold_of,
        "subjects": {p: sorted({subj[c] for c in ids}) for p, ids in parts.items()},
    }


def subject_leaks(splits: Mapping[str, Any], df: pd.DataFrame) -> dict[str, list[str]]:
    """Subjects found in both train and another partition (empty for leave-subjects-out)."""
    subj = dict(zip(df["clip_id"].astype(str), df["subject"].astype(str), strict=True))
    train = {subj[c] for c in splits["partitions"]["train"]}
    return {p: sorted(train & {subj[c] for c in splits["partitions"][p]}) for p in ("val", "test")}


def write_splits(splits: Mapping[str, Any], df: pd.DataFrame, out_dir: str | os.PathLike[str]) -> Path:
    """``splits.json`` (partitions, subjects, method) and ``folds.csv`` (clip, subject, fold, partition)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "splits.json").write_text(json.dumps(
        {k: v for k, v in splits.items() if k != "fold_of"}, indent=1))
    part_of = {c: p for p in PARTITIONS for c in splits["partitions"][p] if c not in ()}
    for c in splits["partitions"]["val"]:  # val may equal test; report it as test
        part_of.setdefault(c, "val")
    rows = pd.DataFrame({
        "clip_id": df["clip_id"].astype(str),
        "subject": df["subject"].astype(str),
        "fold": [splits["fold_of"].get(str(c), pd.NA) for c in df["clip_id"]],
        "partition": [part_of.get(str(c), "") for c in df["clip_id"]],
    })
    rows.to_csv(out / "folds.csv", index=False)
    return out / "splits.json"
