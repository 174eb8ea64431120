"""Merging fold models' predictions on one test partition: CCC centering or plain averaging.

Cross-validated continuous models (LFAN's 6 folds) each predict the same test frames; CCC
centering (spec/fusion-models.md) shifts every fold's predictions to an agreement-weighted
common mean before averaging, so one biased fold cannot drag the ensemble. Optional per-clip
smoothing (uniform filter, e.g. 20 frames valence / 50 arousal as JCA) is reported next to raw.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from avemo.errors import UsageError
from avemo.fusion.ensemble import (  # noqa: E402,F401 - the algorithms, re-exported
    DEFAULT_SMOOTH,
    METHODS,
    ccc,
    ccc_centering,
    merge_class_scores,
    merge_frame_predictions,
    plain_average,
    smooth,
)
from avemo.fusion.splits import official_partition
from avemo.workflows.entry import module_main

# ----------------------------------------------------------------------------- fold runs


def holdout_ids(manifest: pd.DataFrame) -> list[str]:
    """Clips of the manifest's official test partition (kept out of the folds by ``pool: trainval``)."""
    return [
        str(c)
        for c, s in zip(manifest["clip_id"], manifest["split"], strict=True)
        if official_partition(s) == "test"
    ]


def predict_run_on(
    run_dir: Path,
    clip_ids: Sequence[str] | None = None,
    feature_cache: dict | None = None,
    checkpoint: str | None = None,
) -> tuple[dict, Any]:
    """Rebuild a finished run (``Run.from_dir``: its ``dm`` has the same split, hence the same
    normalisation statistics) and predict ``clip_ids`` (default: the official test clips) with
    its weights (``checkpoint``: ``best`` / ``last``; None: those its final metrics came from)."""
    from avemo.fusion.run import Run

    run = Run.from_dir(run_dir, checkpoint, feature_cache=feature_cache)
    ids = list(clip_ids) if clip_ids is not None else holdout_ids(run.dm.manifest)
    if not ids:
        raise UsageError(
            f"{run_dir}: the manifest has no clips with split=test, so the fold models have nothing "
            "held out in common to predict and merge. Keep a set out of the folds: mark those clips "
            "split=test in the manifest (e.g. Aff-Wild2's validation videos; its test labels are not "
            "public) and rerun the grid, whose `cv: pool: trainval` keeps them out of every fold"
        )
    return run.predictions(clip_ids=ids), run.dm


def merge_fold_runs(
    run_dirs: Sequence[Path],
    method: str = "ccc_centering",
    smooth_frames: Mapping[str, int] | None = None,
    feature_cache: dict | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict the held-out (official test) clips with every fold model and merge them with
    the runs' task: regression -- CCC centering (or plain mean) per target, raw and smoothed
    CCC; classification -- mean of the class probabilities, accuracy / UAR of every fold and
    of the merge."""
    cache = {} if feature_cache is None else feature_cache
    tables, task = [], None
    for rd in run_dirs:
        res, dm = predict_run_on(Path(rd), feature_cache=cache)
        task = dm.task
        tables.append(task.prediction_table(res, "holdout").drop(columns="partition"))
    if task is None:
        raise ValueError("no fold runs to merge")
    return task.merge(tables, method, smooth_frames)


def merge_grid(out_dir: str | os.PathLike[str], method: str = "ccc_centering") -> pd.DataFrame:
    """Merge the fold models of every config of a finished cross-validation grid (and every
    seed separately); writes ``merged/<config>/predictions.parquet`` and ``merged/scores.csv``."""
    out = Path(out_dir)
    table = pd.read_csv(out / "results.csv", dtype=str)
    if "fold" not in table.columns:
        raise UsageError(f"{out} is not a cross-validation grid (no fold axis): nothing to merge")
    done = table[table["status"] == "done"]
    group_cols = ["config_id"] + (["seed"] if "seed" in done.columns else [])
    all_scores = []
    cache: dict = {}
    for key, grp in done.groupby(group_cols, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        name = "__".join(str(k) for k in key)
        merged, scores = merge_fold_runs(
            [Path(d) for d in grp["run_dir"]], method, feature_cache=cache
        )
        dest = out / "merged" / name
        dest.mkdir(parents=True, exist_ok=True)
        merged.to_parquet(dest / "predictions.parquet", index=False)
        scores.insert(0, "config", name)
        all_scores.append(scores)
    result = pd.concat(all_scores, ignore_index=True) if all_scores else pd.DataFrame()
    (out / "merged").mkdir(exist_ok=True)
    result.to_csv(out / "merged" / "scores.csv", index=False)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``avemo merge`` (also ``python -m avemo.workflows.merge``)."""
    p.add_argument("out_dir", metavar="GRID_OUT", help="a cross-validated grid results folder")
    p.add_argument(
        "--method",
        default="ccc_centering",
        choices=sorted(METHODS),
        help="how fold models are merged (default: ccc_centering)",
    )


def run(a: argparse.Namespace) -> int:
    if not (Path(a.out_dir) / "results.csv").is_file():
        raise UsageError(
            f"{a.out_dir} is not a grid results folder (no results.csv): "
            "give the -o folder of a cross-validated `avemo ablate`"
        )
    print(merge_grid(a.out_dir, a.method).to_string(index=False))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m avemo.workflows.merge``: the options and exit codes of ``avemo merge``."""
    return module_main("merge", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
