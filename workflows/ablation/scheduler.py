"""Running a grid: check every cell, plan units, claim and train them, then merge the table.

Rerunning continues where a killed run stopped: finished cells (DONE.json with this grid's
cell hash) are skipped, a half-written one is redone. ``AVEMO_GRID_STACK`` /
``AVEMO_GRID_WORKERS`` (``avemo.settings``) override the grid's ``stack:`` / ``workers:``.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from avemo import settings
from avemo.progress import Progress
from avemo.workflows.ablation.cells import (
    CellStatus,
    TrainFn,
    cell_hashes,
    cell_state,
    write_json,
)
from avemo.workflows.ablation.checks import check_features, problem_summary
from avemo.workflows.ablation.errors import GridError, MissingFeaturesError
from avemo.workflows.ablation.folds import save_fold_lists
from avemo.workflows.ablation.spec import Cell, Grid, grid_record, load_grid, with_overrides
from avemo.workflows.ablation.stacking import plan_units, run_unit
from avemo.workflows.ablation.tables import aggregate, collect_table, write_tables
from avemo.workflows.ablation.workers import (
    Claims,
    barrier,
    dist_env,
    init_torch_dist,
    single_process_env,
    spawn_workers,
    wait_for_shards,
)
from avemo.workflows.report import write_report


def default_train_fn(spec: str | None = None) -> TrainFn:
    """Shared-datamodule ``train_from_config``, or the grid's ``train_fn: module:function``."""
    if spec is None:
        from avemo.fusion.grid_trainer import SharedDataTrainer  # torch and Lightning

        return SharedDataTrainer()
    mod, _, fn = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), fn or "train_from_config")
    except (ImportError, AttributeError) as e:
        raise GridError(f"train_fn: {spec!r} cannot be imported: {e}") from None


def _brief(metrics: Mapping[str, Any]) -> str:
    items = [
        (k, v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    return " ".join(f"{k}={v:.4g}" for k, v in items[:4])


def _states(g: Grid, out: Path, cells: Sequence[Cell]) -> dict[str, CellStatus]:
    return {c.cell_id: cell_state(out / "runs" / c.cell_id, cell_hashes(g, c)) for c in cells}


def run_grid(
    grid: str | os.PathLike[str] | Mapping[str, Any] | Grid,
    out_dir: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    *,
    train_fn: TrainFn | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    report: bool = True,
    feature_cache: dict | None = None,
    quiet: bool = False,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or, with ``dry_run``, plan) every cell of a grid; returns out_dir, table, aggregate,
    per-cell states and feature problems. Rerunning continues where a killed run stopped.
    ``overrides`` (``key=value``, as for ``fuse-train``) apply to every cell, after the grid's
    own ``overrides``; a key that an axis varies is refused (the axis would win silently).
    """
    g = grid if isinstance(grid, Grid) else load_grid(grid)
    if overrides:
        g.overrides = [*g.overrides, *with_overrides(g, overrides)]
    out = Path(out_dir) if out_dir else g.out_dir
    env_rank, env_world = dist_env()
    rank = env_rank if rank is None else rank
    world = env_world if world_size is None else world_size
    say = (lambda *a: None) if quiet else (lambda *a: print("[ablate]", *a, file=sys.stderr))  # noqa: E731
    env = settings.current()  # a bad AVEMO_GRID_* value stops here, before anything is written
    stack = env.grid_stack or g.stack
    cells = g.cells()
    problems = check_features(g, cells)  # InvalidCellsError: no cell runs, dry run or not
    bad = {c: p for c, p in problems.items() if p}
    if bad:
        lines = problem_summary(bad)
        say(f"{len(bad)} of {len(cells)} cell(s) cannot run from the cache:\n" + "\n".join(lines))
        if g.on_missing == "error" and not dry_run:
            raise MissingFeaturesError(bad, lines)
    states = _states(g, out, cells)
    say(
        f"grid {g.name}: {len(cells)} cells, "
        f"{sum(s == CellStatus.DONE for s in states.values())} done, "
        f"{len(bad)} missing features; rank {rank}/{world}; out {out}"
    )
    if dry_run:
        plan = pd.DataFrame(
            [
                {
                    "cell_id": c.cell_id,
                    **c.labels,
                    "state": states[c.cell_id].value,
                    "problems": "; ".join(problems[c.cell_id]),
                }
                for c in cells
            ]
        )
        if not quiet:
            print(plan.to_string(index=False))
        if bad and g.on_missing == "error":  # the run would refuse: so does its rehearsal (exit 2)
            raise MissingFeaturesError(bad, problem_summary(bad))
        return {
            "out_dir": out,
            "table": plan,
            "aggregate": None,
            "states": states,
            "problems": problems,
        }

    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.yaml").write_text(yaml.safe_dump(grid_record(g), sort_keys=False))
    if g.cv and rank == 0:
        try:
            save_fold_lists(g.base, g.cv, out, cells[0].override_args(g.overrides))
        except Exception as e:  # noqa: BLE001 - each run still writes its own fold lists
            say(f"fold lists not saved: {type(e).__name__}: {e}")
    workers = env.grid_workers or g.workers
    procs: list[Any] = []
    if workers > 1 and world == 1:
        procs = spawn_workers(out, workers, quiet)
        world = workers
        import torch  # heavy; only when local workers share the cores

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    stack = stack if train_fn is None and not g.train_fn else "off"
    train_fn = train_fn or default_train_fn(g.train_fn)
    cache = {} if feature_cache is None else feature_cache
    runnable = [c for c in cells if c.cell_id not in bad]
    units = plan_units(g, runnable, stack)
    k = rank * len(units) // max(world, 1)
    units = units[k:] + units[:k]  # each worker starts elsewhere, then takes whatever is unclaimed
    claims = Claims(out / "claims")
    t0 = time.perf_counter()
    started = time.time() - 1.0
    ran = 0
    todo = sum(states[c.cell_id] != CellStatus.DONE for c in runnable)
    prog = Progress(
        f"grid {g.name}" + (f" rank {rank}" if world > 1 else ""), todo, "cells", enabled=not quiet
    )

    def finished(c: Cell) -> bool:
        return cell_state(out / "runs" / c.cell_id, cell_hashes(g, c)) == CellStatus.DONE

    # each cell is a one-process run, even under torchrun
    with single_process_env(), prog:
        for unit in units:
            got = [c for c in unit if not finished(c) and claims.take(c.cell_id)]
            for c in [c for c in got if finished(c)]:
                claims.release(c.cell_id)  # finished by another worker while we looked
                got.remove(c)
            if not got:
                continue
            try:
                recs = run_unit(g, got, out, train_fn, cache, say)
            finally:
                for c in got:
                    claims.release(c.cell_id)
            for cell, rec in zip(got, recs, strict=True):
                ran += 1
                status = CellStatus(rec["status"])
                states[cell.cell_id] = status
                if not quiet:
                    how = f" (stacked x{rec['stacked']})" if rec.get("stacked") else ""
                    prog.write(
                        f"[ablate] {cell.cell_id}: {status} in {rec['wall_s']:.1f}s{how} "
                        + _brief(rec.get("metrics", {}))
                    )
                prog.update(1, bad=status != CellStatus.DONE)
    wall = time.perf_counter() - t0
    use_dist = init_torch_dist(world)
    if world > 1:
        (out / "shards").mkdir(exist_ok=True)
        write_json(out / "shards" / f"rank{rank}-of-{world}.json", {"rank": rank, "ran": ran})
        if use_dist:
            barrier()
        elif rank == 0:
            wait_for_shards(out, world, runnable, started, env.shard_wait_s)
        for p in procs:
            p.wait()
        if rank != 0:
            return {
                "out_dir": out,
                "table": None,
                "aggregate": None,
                "states": states,
                "problems": problems,
                "ran": ran,
                "wall_s": wall,
            }
    table = collect_table(out, cells, bad)
    agg = aggregate(table)
    write_tables(out, table, agg)
    result = {
        "out_dir": out,
        "table": table,
        "aggregate": agg,
        "states": states,
        "problems": problems,
        "ran": ran,
        "wall_s": wall,
    }
    if report and len(table):
        # matplotlib: the report is optional (report=False) and the heaviest import of a grid

        try:
            result["report"] = write_report(
                out, table, agg, grid=g, feature_cache=cache, **g.report
            )
        except Exception as e:  # noqa: BLE001 - a plotting problem must not lose the table
            print(f"[ablate] report failed: {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exc()
    return result
