"""Cross-validation as a grid axis: k-fold, leave-subjects-out, or the manifest's own folds.

A ``cv:`` block in a grid adds a ``fold`` axis whose values set ``split.method/k/fold`` of the
run config; the partitions themselves come from ``avemo.fusion.splits.make_splits`` (the same
code every run uses), and the fold lists of the whole cross-validation are written once next to
the grid results (``folds/folds.csv`` + one ``splits.json`` per fold) so published numbers can
be re-run on the same folds. ``run_crossval`` is the one-config shortcut.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from avemo.fusion.config import ConfigError

METHODS = {  # cv method -> split config it implies
    "kfold": {"method": "kfold", "use_manifest_folds": False},
    "subjects": {"method": "subjects"},
    "manifest": {"method": "kfold", "use_manifest_folds": True},
}
PASS_THROUGH = ("val", "shuffle", "pool")


def split_overrides(cv: Mapping[str, Any], fold: int) -> dict[str, Any]:
    """Dotted ``split.*`` overrides for one fold of the cross-validation ``cv``."""
    method = cv.get("method", "kfold")
    if method not in METHODS:
        raise ConfigError(f"cv.method must be one of {sorted(METHODS)}, got {method!r}")
    if "k" not in cv:
        raise ConfigError(
            "cv needs k (number of folds; for method manifest: the manifest's fold count)"
        )
    over = {f"split.{k}": v for k, v in METHODS[method].items()}
    over["split.k"] = int(cv["k"])
    over["split.fold"] = int(fold)
    for key in PASS_THROUGH:
        if key in cv:
            over[f"split.{key}"] = cv[key]
    return over


def fold_axis(cv: Mapping[str, Any]) -> Any:
    """The grid axis ``fold`` with one value per fold."""
    from avemo.workflows.ablate import Axis

    k = int(cv.get("k", 0))
    if k < 2:
        raise ConfigError(f"cv.k must be >= 2, got {cv.get('k')!r}")
    folds = cv.get("folds") or list(range(k))  # run a subset of folds (quick checks)
    return Axis("fold", [(str(f), split_overrides(cv, f)) for f in folds])


def fold_lists(
    config: Mapping[str, Any] | str | os.PathLike[str],
    cv: Mapping[str, Any],
    overrides: list[str] | None = None,
) -> list[dict[str, Any]]:
    """``make_splits`` for every fold of ``cv`` on the config's manifest."""
    from avemo.fusion.config import load_config
    from avemo.fusion.splits import make_splits

    cfg = load_config(config, overrides)
    df, labels = _labelled_manifest(cfg)
    out = []
    for f in range(int(cv["k"])):
        split_cfg = dict(cfg["split"])
        split_cfg.update({k.split(".", 1)[1]: v for k, v in split_overrides(cv, f).items()})
        out.append(make_splits(df, split_cfg, int(cfg.get("seed", 0)), labels))
    return out


def _labelled_manifest(cfg: Mapping[str, Any]) -> tuple[pd.DataFrame, list[str] | None]:
    """The config's manifest rows that carry the task's labels, and the labels that stratify
    folds: the same rows and labels a run splits (before its feature-status filter)."""
    from avemo.data.manifest import load_manifest
    from avemo.fusion.tasks import build_task

    task = build_task(cfg)
    df = task.select(load_manifest(_manifest_path(cfg), check_files=False), []).reset_index(
        drop=True
    )
    return df, task.split_labels(df)


def _manifest_path(cfg: Mapping[str, Any]) -> Path:
    p = Path(cfg["data"]["manifest"])
    if not p.is_absolute() and not p.exists() and cfg.get("_source"):
        alt = Path(cfg["_source"]).parent / p
        if alt.exists():
            return alt
    return p


def save_fold_lists(
    config: Mapping[str, Any] | str | os.PathLike[str],
    cv: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    overrides: list[str] | None = None,
) -> Path:
    """Write ``out_dir/folds/folds.csv`` (clip, subject, fold) and ``fold<i>/splits.json``."""
    from avemo.fusion.config import load_config
    from avemo.fusion.splits import write_splits

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


def subject_disjoint(splits: Mapping[str, Any]) -> bool:
    """True when no subject is in both train and test (leave-subjects-out guarantee)."""
    s = splits["subjects"]
    return not (set(s["train"]) & set(s["test"]))


def run_crossval(
    config: str | os.PathLike[str] | Mapping[str, Any],
    cv: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    overrides: list[str] | None = None,
    **grid_kwargs: Any,
) -> dict[str, Any]:
    """Cross-validate one config: a grid whose only axis is the fold."""
    from avemo.workflows.ablate import run_grid

    base = str(config) if not isinstance(config, Mapping) else dict(config)
    grid = {
        "name": "crossval",
        "base": base,
        "overrides": list(overrides or []),
        "cv": dict(cv),
        "axes": {},
    }
    return run_grid(grid, out_dir=out_dir, **grid_kwargs)
