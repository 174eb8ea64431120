"""Units of work: cells that can train as one stacked model, and training a unit.

Cells whose configs differ only by ``fusion.stacked.STACKABLE_KEYS`` (seed, learning rate,
weight decay, loss options, early stopping) and share a data side train together as one
stacked model (``fusion.stacked``); each still gets its own run folder and DONE.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avemo.workflows.ablation.cells import (
    DONE,
    TrainFn,
    done_record,
    fresh_run_dir,
    run_cell,
    write_json,
)
from avemo.workflows.ablation.spec import Cell, Grid, resolve_cell_config

if TYPE_CHECKING:
    from avemo.fusion.grid_trainer import SharedDataTrainer

#: Most cells trained as one stacked model (memory grows with it; more cells -> more units).
STACK_MAX = 32


def plan_units(grid: Grid, cells: Sequence[Cell], stack: str = "auto") -> list[list[Cell]]:
    """Cells grouped into units of work: with ``stack: on`` the cells whose configs differ
    only by ``fusion.stacked.STACKABLE_KEYS`` (same data side) form one unit (at most
    ``STACK_MAX``), trained as one stacked model; every other cell is a unit of its own.
    ``auto`` stacks the cells that train on a GPU, where one stacked step replaces several
    kernel launches per layer; on a CPU the work is the same FLOPs either way, and the
    AFEW-scale grid took 39.9 s stacked vs 27.9 s (``python -m avemo.bench --only grid``)."""
    if stack == "off":
        return [[c] for c in cells]
    # torch and Lightning: imported only when a grid plans stacked units
    from avemo.fusion.grid_trainer import SharedDataTrainer
    from avemo.fusion.stacked import stack_key
    from avemo.fusion.train import trainer_device

    groups: dict[str, list[Cell]] = {}
    for c in cells:
        cfg = resolve_cell_config(grid, c)
        device, _ = trainer_device(cfg.trainer.accelerator)
        if stack == "auto" and not str(device).startswith("cuda"):
            # a unit of its own (cell ids are unique, JSON keys never equal one)
            groups[c.cell_id] = [c]
            continue
        key = json.dumps([SharedDataTrainer.data_key(cfg, device), stack_key(cfg)])
        groups.setdefault(key, []).append(c)
    return [g[i : i + STACK_MAX] for g in groups.values() for i in range(0, len(g), STACK_MAX)]


class NotStacked(Exception):
    """Why a unit is trained cell by cell instead of stacked (logged; the cells still train)."""


def run_unit(
    grid: Grid,
    unit: Sequence[Cell],
    out: Path,
    train_fn: TrainFn,
    feature_cache: dict,
    say: Callable[..., None] = print,
) -> list[dict[str, Any]]:
    """One cell as ``run_cell``; several as one stacked model (``fusion.stacked``), each cell's
    folder and DONE.json as a separate run writes them. Cells that cannot be stacked (the log
    says why) or a stacked fit that fails are trained one by one instead."""
    dirs = [out / "runs" / c.cell_id for c in unit]
    if len(unit) > 1:
        from avemo.fusion.grid_trainer import SharedDataTrainer  # torch and Lightning

        if isinstance(train_fn, SharedDataTrainer):
            try:
                return _run_stacked(grid, unit, dirs, train_fn, feature_cache)
            except NotStacked as e:
                say(
                    f"{len(unit)} cells ({unit[0].cell_id}, ...) trained separately, not stacked: {e}"
                )
    return [run_cell(grid, c, d, train_fn, feature_cache) for c, d in zip(unit, dirs, strict=True)]


def _run_stacked(
    grid: Grid,
    unit: Sequence[Cell],
    dirs: list[Path],
    train_fn: SharedDataTrainer,
    feature_cache: dict,
) -> list[dict[str, Any]]:
    """The unit trained as one stacked model; its cells' records (``NotStacked``: why not)."""
    from avemo.fusion.stacked import fit_stacked, why_not_stackable  # torch

    cfgs = [resolve_cell_config(grid, c) for c in unit]
    why = why_not_stackable(cfgs[0])
    if why is not None:
        raise NotStacked(why)
    t0 = time.perf_counter()
    for d in dirs:
        fresh_run_dir(d)
    try:
        dm = train_fn.datamodule(cfgs[0], feature_cache)
        results = fit_stacked(cfgs, dm, dirs, verbose=cfgs[0].output.verbose)
    except Exception as e:  # noqa: BLE001 - fall back to separate runs, saying why
        raise NotStacked(f"{type(e).__name__}: {e}") from e
    wall = time.perf_counter() - t0
    recs = []
    for c, d, res in zip(unit, dirs, results, strict=True):
        rec = done_record(grid, c, res, wall / len(unit), d, stacked=len(unit))
        write_json(d / DONE, rec)
        recs.append(rec)
    return recs
