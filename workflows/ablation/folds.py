"""Cross-validation as a grid axis: the folds of a ``cv:`` block and their fold lists.

A ``cv:`` block adds a ``fold`` axis whose values set ``split.method/k/fold`` of the run
config; the partitions themselves come from ``avemo.fusion.splits.make_splits`` (the same code
every run uses), and the fold lists of the whole cross-validation are written once next to the
grid results (``folds/folds.csv`` + one ``splits.json`` per fold) so published numbers can be
re-run on the same folds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avemo.data.manifest import load_manifest
from avemo.fusion.config import RunConfig, load_config
from avemo.fusion.splits import make_splits, write_splits
from avemo.schema import format_errors
from avemo.workflows.ablation.errors import GridError

METHODS: dict[str, dict[str, Any]] = {  # cv method -> split config it implies
    "kfold": {"method": "kfold", "use_manifest_folds": False},
    "subjects": {"method": "subjects"},
    "manifest": {"method": "kfold", "use_manifest_folds": True},
}
PASS_THROUGH = ("val", "shuffle", "pool")  # copied to split.*, checked there by the run config


class CVSpec(BaseModel):
    """A grid's ``cv:`` block."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["kfold", "subjects", "manifest"] = "kfold"
    k: int = Field(ge=2)  # number of folds (method manifest: the manifest's fold count)
    folds: list[int] | None = None  # run a subset of folds (quick checks)
    val: Any = None
    shuffle: Any = None
    pool: Any = None


def cv_spec(cv: Mapping[str, Any] | CVSpec) -> CVSpec:
    """``cv`` validated (a mapping from Python is checked as a grid file's block is)."""
    if isinstance(cv, CVSpec):
        return cv
    try:
        return CVSpec.model_validate(dict(cv))
    except ValidationError as e:
        raise GridError(format_errors(e, CVSpec, prefix="cv.")) from None


def split_overrides(cv: Mapping[str, Any] | CVSpec, fold: int) -> dict[str, Any]:
    """Dotted ``split.*`` overrides for one fold of the cross-validation ``cv``."""
    c = cv_spec(cv)
    over: dict[str, Any] = {f"split.{k}": v for k, v in METHODS[c.method].items()}
    over["split.k"] = c.k
    over["split.fold"] = int(fold)
    for key in PASS_THROUGH:
        if key in c.model_fields_set:
            over[f"split.{key}"] = getattr(c, key)
    return over


def fold_values(cv: Mapping[str, Any] | CVSpec) -> list[tuple[str, dict[str, Any]]]:
    """The ``fold`` axis's (label, overrides) values, one per fold."""
    c = cv_spec(cv)
    folds = c.folds or list(range(c.k))
    return [(str(f), split_overrides(c, f)) for f in folds]


def fold_lists(
    config: Mapping[str, Any] | str | os.PathLike[str],
    cv: Mapping[str, Any] | CVSpec,
    overrides: list[str] | None = None,
) -> list[dict[str, Any]]:
    """``make_splits`` for every fold of ``cv`` on the config's manifest."""
    c = cv_spec(cv)
    cfg = load_config(config, overrides)
    df, labels = _labelled_manifest(cfg)
    out = []
    for f in range(c.k):
        fold = {k.split(".", 1)[1]: v for k, v in split_overrides(c, f).items()}
        # the fold's split.* on the run's split section, validated by make_splits as a run's
        out.append(make_splits(df, {**cfg.split.model_dump(), **fold}, cfg.seed, labels))
    return out


def _labelled_manifest(cfg: RunConfig) -> tuple[pd.DataFrame, list[str] | None]:
    """The config's manifest rows that carry the task's labels, and the labels that stratify
    folds: the same rows and labels a run splits (before its feature-status filter)."""
    from avemo.fusion.tasks import build_task  # the task registry: torch, loaded on demand

    task = build_task(cfg)
    df = task.select(load_manifest(_manifest_path(cfg), check_files=False), []).reset_index(
        drop=True
    )
    return df, task.split_labels(df)


def _manifest_path(cfg: RunConfig) -> Path:
    p = Path(cfg.data.manifest)
    if not p.is_absolute() and not p.exists() and cfg.source:
        alt = Path(cfg.source).parent / p
        if alt.exists():
            return alt
    return p


def save_fold_lists(
    config: Mapping[str, Any] | str | os.PathLike[str],
    cv: Mapping[str, Any] | CVSpec,
    out_dir: str | os.PathLike[str],
    overrides: list[str] | None = None,
) -> Path:
    """Write ``out_dir/folds/folds.csv`` (clip, subject, fold) and ``fold<i>/splits.json``."""
    cfg = load_config(config, overrides)
    df, _ = _labelled_manifest(cfg)
    root = Path(out_dir) / "folds"
    splits = fold_lists(config, cv, overrides)
    for f, sp in enumerate(splits):
        write_splits(sp, df, root / f"fold{f}")
    fold_of = splits[0]["fold_of"]
    table = pd.DataFrame(
        {"clip_id": df["clip_id"].astype(str), "subject": df["subject"].astype(str)}
    )
    table["fold"] = [fold_of.get(c, pd.NA) for c in table["clip_id"]]
    table.to_csv(root / "folds.csv", index=False)
    return root / "folds.csv"
