"""One cell on disk: its config hash, its state, and training it into its run folder.

A cell is finished when its run folder holds ``DONE.json``, written last and atomically; a
failed cell leaves ``FAILED.json`` (the error and its traceback) and the grid goes on. The
record keys and status values are what earlier grid folders hold, so old grids resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from avemo.workflows.ablation.spec import Cell, Grid

DONE = "DONE.json"
FAILED = "FAILED.json"
#: ``train_from_config``'s signature: (config, overrides, *, feature_cache, run_dir) -> result
TrainFn = Callable[..., Mapping[str, Any]]


class CellStatus(StrEnum):
    """Where a cell stands (the values are the words written in DONE.json and results.csv)."""

    DONE = "done"  # DONE.json with this grid's cell hash
    STALE = "stale"  # finished with another config (the grid or its base changed)
    PARTIAL = "partial"  # a run folder without a record: a killed run, redone
    FAILED = "failed"  # FAILED.json: training raised
    TODO = "todo"  # not started
    MISSING_FEATURES = "missing_features"  # results table: its features are not in the cache
    NOT_RUN = "not_run"  # results table: no record (another rank's, still running)


def _base_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[Any]:
    """The parsed YAML of a config file and of every file its ``base:`` chain names: a comment
    or layout edit changes nothing, a value changed in any file of the chain does."""
    data = yaml.safe_load(path.read_text())
    parent = data.get("base") if isinstance(data, dict) else None
    if not parent or path.resolve() in seen:
        return [data]
    return [data, *_base_chain(path.parent / str(parent), (*seen, path.resolve()))]


def _digest(base: Any, grid: Grid, cell: Cell) -> str:
    blob = json.dumps([base, grid.overrides, cell.overrides], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cell_hash(grid: Grid, cell: Cell) -> str:
    """What a finished cell was trained from (the base config's chain, grid overrides, bundle)."""
    base = grid.base
    return _digest(_base_chain(Path(base)) if isinstance(base, str) else base, grid, cell)


def cell_hashes(grid: Grid, cell: Cell) -> tuple[str, ...]:
    """``cell_hash`` and the hash records written before 2026-12-06 hold (the base file's text
    alone), so grid folders finished then still count as done."""
    base = grid.base
    if not isinstance(base, str):
        return (cell_hash(grid, cell),)
    return (cell_hash(grid, cell), _digest(Path(base).read_text(), grid, cell))


def cell_state(run_dir: Path, want_hash: str | Sequence[str]) -> CellStatus:
    """done (its record holds one of ``want_hash``) | stale (finished with another config) |
    partial | failed | todo."""
    wanted = (want_hash,) if isinstance(want_hash, str) else tuple(want_hash)
    done = run_dir / DONE
    if done.exists():
        try:
            have = json.loads(done.read_text()).get("cell_hash")
        except (json.JSONDecodeError, OSError):
            return CellStatus.PARTIAL
        return CellStatus.DONE if have in wanted else CellStatus.STALE
    if (run_dir / FAILED).exists():
        return CellStatus.FAILED
    return CellStatus.PARTIAL if run_dir.exists() else CellStatus.TODO


def is_finished(run_dir: Path) -> bool:
    """DONE or FAILED: nothing more will be written by the worker that had it."""
    return (run_dir / DONE).exists() or (run_dir / FAILED).exists()


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as JSON, atomically (a reader sees the old file or the whole new one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_plain(obj), indent=1, default=str))
    os.replace(tmp, path)


def _plain(obj: Any) -> Any:
    if isinstance(obj, StrEnum):
        return obj.value
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def cell_record(grid: Grid, cell: Cell) -> dict[str, Any]:
    """The keys every DONE/FAILED record starts with."""
    return {
        "cell_id": cell.cell_id,
        "config_id": cell.config_id,
        "labels": cell.labels,
        "overrides": cell.overrides,
        "cell_hash": cell_hash(grid, cell),
    }


def done_record(
    grid: Grid,
    cell: Cell,
    result: Mapping[str, Any],
    wall_s: float,
    trained_in: Path | str,
    stacked: int | None = None,
) -> dict[str, Any]:
    """A finished cell's record: its metrics, the ``a/b`` extras (e.g. test/confusion), time,
    and for a stacked unit how many cells it trained with."""
    extra = {k: v for k, v in result.items() if "/" in k and not isinstance(v, Path)}
    rec = {
        **cell_record(grid, cell),
        "status": CellStatus.DONE.value,
        "metrics": dict(result.get("metrics") or {}),
        "extra": extra,
        "wall_s": wall_s,
    }
    if stacked is not None:
        rec["stacked"] = stacked
    rec["trained_in"] = str(trained_in)
    return rec


def fresh_run_dir(run_dir: Path) -> None:
    """An empty run folder (one half-written by a killed run, stale or failed: start clean)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)


def _save_predictions(run_dir: Path, preds: Any) -> None:
    if isinstance(preds, pd.DataFrame) and not any(run_dir.glob("predictions*")):
        preds.to_csv(run_dir / "predictions.csv", index=False)


def run_cell(
    grid: Grid, cell: Cell, run_dir: Path, train_fn: TrainFn, feature_cache: dict
) -> dict[str, Any]:
    """Train one cell into ``run_dir``; DONE.json is the last thing written. A cell whose
    training raises gets FAILED.json and a ``failed`` record: one bad cell must not end the grid.
    """
    fresh_run_dir(run_dir)
    t0 = time.perf_counter()
    try:
        result = train_fn(
            grid.base,
            cell.override_args(grid.overrides),
            feature_cache=feature_cache,
            run_dir=run_dir,
        )
    except Exception as e:  # noqa: BLE001 - one bad cell must not end the grid
        record = {
            **cell_record(grid, cell),
            "status": CellStatus.FAILED.value,
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
            "wall_s": time.perf_counter() - t0,
        }
        write_json(run_dir / FAILED, record)
        print(f"[ablate] cell {cell.cell_id} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return record
    _save_predictions(run_dir, result.get("predictions"))
    record = done_record(
        grid, cell, result, time.perf_counter() - t0, result.get("run_dir", run_dir)
    )
    write_json(run_dir / DONE, record)
    return record
