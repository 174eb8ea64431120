"""Ablation grids from the feature cache: axes x base config -> cells -> runs -> table -> report.

One module per job: ``spec`` (the grid file's schema, ``Grid``/``Axis``/``Cell``),
``folds`` (cross-validation as a ``fold`` axis), ``checks`` (configs and cached features
checked before any cell runs), ``cells`` (a cell's hash, state and run folder), ``stacking``
(units of cells trained as one stacked model), ``workers`` (ranks, claims, local workers),
``scheduler`` (``run_grid``), ``tables`` (results and aggregate), ``errors`` (what stops a
grid). The grid's trainer is ``avemo.fusion.grid_trainer.SharedDataTrainer``; the command is
``avemo ablate`` / ``python -m avemo.workflows.ablate``.
"""

from __future__ import annotations

from avemo.workflows.ablation.cells import DONE, FAILED, CellStatus, cell_state, run_cell
from avemo.workflows.ablation.checks import check_features
from avemo.workflows.ablation.errors import GridError, InvalidCellsError, MissingFeaturesError
from avemo.workflows.ablation.folds import CVSpec, fold_lists, save_fold_lists, split_overrides
from avemo.workflows.ablation.scheduler import default_train_fn, run_grid
from avemo.workflows.ablation.spec import (
    GRID_KEYS,
    STACK_MODES,
    Axis,
    Cell,
    Grid,
    GridSpec,
    fold_axis,
    load_grid,
    resolve_cell_config,
)
from avemo.workflows.ablation.stacking import STACK_MAX, plan_units, run_unit
from avemo.workflows.ablation.tables import aggregate, axis_columns, collect_table, metric_columns
from avemo.workflows.ablation.workers import Claims, dist_env, shard

__all__ = [
    "DONE",
    "FAILED",
    "GRID_KEYS",
    "STACK_MAX",
    "STACK_MODES",
    "Axis",
    "CVSpec",
    "Cell",
    "CellStatus",
    "Claims",
    "Grid",
    "GridError",
    "GridSpec",
    "InvalidCellsError",
    "MissingFeaturesError",
    "aggregate",
    "axis_columns",
    "cell_state",
    "check_features",
    "collect_table",
    "default_train_fn",
    "dist_env",
    "fold_axis",
    "fold_lists",
    "load_grid",
    "metric_columns",
    "plan_units",
    "resolve_cell_config",
    "run_cell",
    "run_grid",
    "run_unit",
    "save_fold_lists",
    "shard",
    "split_overrides",
]
