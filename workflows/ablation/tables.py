"""The grid's results: one row per cell from the records on disk, and the per-config aggregate.

``results.csv``/``.parquet`` has a row per cell (its axis labels, status and scalar metrics);
``aggregate.csv``/``.parquet`` the mean, std and count per config over the replicate axes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from avemo.workflows.ablation.cells import DONE, FAILED, CellStatus
from avemo.workflows.ablation.spec import Cell

#: Columns of the results table that are neither axes nor metrics.
META = ("cell_id", "config_id", "status", "wall_s", "run_dir", "error")


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def collect_table(
    out: Path, cells: Sequence[Cell], missing: Mapping[str, list[str]] | None = None
) -> pd.DataFrame:
    """One row per cell of the grid, from the DONE/FAILED records on disk (all ranks')."""
    rows = []
    for c in cells:
        run_dir = out / "runs" / c.cell_id
        row: dict[str, Any] = {"cell_id": c.cell_id, "config_id": c.config_id, **c.labels}
        if (run_dir / DONE).exists():
            rec = json.loads((run_dir / DONE).read_text())
            row.update(
                status=CellStatus.DONE.value,
                wall_s=rec.get("wall_s"),
                run_dir=str(run_dir),
                **_scalar_metrics(rec.get("metrics", {})),
            )
        elif (run_dir / FAILED).exists():
            rec = json.loads((run_dir / FAILED).read_text())
            row.update(status=CellStatus.FAILED.value, error=rec.get("error"), run_dir=str(run_dir))
        elif missing and missing.get(c.cell_id):
            row.update(
                status=CellStatus.MISSING_FEATURES.value, error="; ".join(missing[c.cell_id])
            )
        else:
            row.update(status=CellStatus.NOT_RUN.value)
        rows.append(row)
    return pd.DataFrame(rows)


def metric_columns(table: pd.DataFrame, axes: Sequence[str] = ()) -> list[str]:
    """Numeric columns that are not axes or bookkeeping: the metrics."""
    return [
        c
        for c in table.columns
        if c not in META and c not in axes and pd.api.types.is_numeric_dtype(table[c])
    ]


def axis_columns(table: pd.DataFrame) -> list[str]:
    """Non-numeric columns that are not bookkeeping: the axis labels."""
    return [
        c for c in table.columns if c not in META and not pd.api.types.is_numeric_dtype(table[c])
    ]


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count per config (over the replicate axes: seeds and folds)."""
    done = table[table["status"] == CellStatus.DONE.value] if "status" in table else table
    if done.empty:
        return pd.DataFrame(columns=["config_id", "n"])
    axes = axis_columns(done)
    mcols = metric_columns(done, axes)
    rows = []
    for cid, grp in done.groupby("config_id", sort=False):
        row: dict[str, Any] = {"config_id": cid, "n": len(grp)}
        for m in mcols:
            vals = grp[m].dropna()
            row[f"{m}_mean"] = float(vals.mean()) if len(vals) else float("nan")
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def write_tables(out: Path, table: pd.DataFrame, agg: pd.DataFrame) -> None:
    """``results`` and ``aggregate`` as CSV and (where pyarrow can) Parquet."""
    for name, df in (("results", table), ("aggregate", agg)):
        df.to_csv(out / f"{name}.csv", index=False)
        try:
            df.to_parquet(out / f"{name}.parquet", index=False)
        except Exception as e:  # noqa: BLE001 - CSV is the fallback, say why Parquet failed
            print(f"[ablate] {name}.parquet not written: {e}", file=sys.stderr)
