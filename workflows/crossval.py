"""Cross-validation of one config: a grid whose only axis is the fold, and the subject check.

The folds themselves (``cv:`` -> a ``fold`` axis, ``fold_lists``, ``save_fold_lists``) are
the grid's: ``avemo.workflows.ablation.folds``, re-exported here. ``run_crossval`` is the
one-config shortcut; ``subject_disjoint`` checks a split for leave-subjects-out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from avemo.workflows.ablation import run_grid
from avemo.workflows.ablation.folds import (  # noqa: F401 - the folds' functions, re-exported
    METHODS,
    fold_lists,
    save_fold_lists,
    split_overrides,
)
from avemo.workflows.ablation.spec import fold_axis  # noqa: F401 - re-exported


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
    base = str(config) if not isinstance(config, Mapping) else dict(config)
    grid = {
        "name": "crossval",
        "base": base,
        "overrides": list(overrides or []),
        "cv": dict(cv),
        "axes": {},
    }
    return run_grid(grid, out_dir=out_dir, **grid_kwargs)
