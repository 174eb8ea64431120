"""Ablation grids from the feature cache: axes x base config -> cells -> runs -> table -> report.

This module is the command (``avemo ablate``, ``python -m avemo.workflows.ablate``, which
``torchrun``, ``srun`` and local workers run); the grid code lives in
``avemo.workflows.ablation``, one module per job.

A grid YAML names a base run config and axes; every combination of axis values is one cell,
trained by ``avemo.fusion.grid_trainer.SharedDataTrainer`` inside this process, with one shared
``feature_cache`` so the HDF5 files are read (and moved to the device) once per grid, not once
per run. A cell is finished when its run folder holds ``DONE.json``, written last and
atomically; a killed grid rerun skips finished cells and redoes the half-written one. Cells
whose feature files are missing or were made with another config are reported before any run
starts (with ``on_missing: error`` they stop the grid, ``--dry-run`` included); a cell whose
config does not validate stops the grid, ``--dry-run`` included (exit 2).
Cells whose configs differ only by seed, learning rate, weight decay, loss options or early
stopping train together as one stacked model (``fusion.stacked``; ``stack: off`` trains every
cell alone); each still gets its own run folder and DONE.json. Processes (``RANK``/
``WORLD_SIZE`` from ``torchrun`` or plain env, ``SLURM_PROCID``/``SLURM_NTASKS`` under
``srun``, or ``workers: N`` local processes) claim cells atomically (``claims/``: O_EXCL files,
a dead local process's claims are reclaimed), so no worker idles while cells remain; rank 0
merges the table.

Grid YAML::

    name: demo
    base: ../configs/demo_fbp.yaml      # relative paths in a grid file: relative to it
    out_dir: ../../runs/ablate/demo     # optional; default runs/ablate/<name> in the cwd
    overrides: [trainer.max_epochs=3]   # applied to every cell
    axes:
      seed: [0, 1, 2]                   # list: the axis name is the dotted key
      temporal:                         # key + values
        key: model.temporal
        values: [mean, self_attention]
      fusion:                           # named bundles of overrides
        concat: {model.fusion: concat}
        fbp: {model.fusion: fbp, model.fbp.k: 5}
    cv: {method: kfold, k: 5}           # optional: adds a ``fold`` axis (see crossval.py)
    train_fn: pkg.module:function       # optional: another trainer with train_from_config's API
    workers: 2                          # optional: local processes sharing the cells (GPU: several
                                        # small runs at once; env AVEMO_GRID_WORKERS overrides)
    stack: auto                         # auto | on | off: cells differing only by seed, lr, weight
                                        # decay, loss or early stopping train as one stacked model
                                        # (auto: on a GPU; on a CPU stacking measured slower)
    replicates: [seed, fold]            # aggregated over (default: seed and fold)
    on_missing: skip                    # cells lacking features: skip (default) | error
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from avemo.workflows.ablation import run_grid
from avemo.workflows.entry import module_main


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m avemo.workflows.ablate`` (workers, torchrun and srun use it)."""
    p.add_argument("grid", help="grid YAML")
    p.add_argument("-o", "--output", help="results folder (default: the grid's out_dir)")
    p.add_argument("--dry-run", action="store_true", help="plan and check the cells, train nothing")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides for every cell (e.g. data.features_dir=features/ravdess)",
    )


def run(a: argparse.Namespace) -> int:
    """Run the grid of the parsed arguments; prints where its results are."""
    res = run_grid(a.grid, out_dir=a.output, dry_run=a.dry_run, overrides=a.overrides)
    print(f"results: {res['out_dir']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m avemo.workflows.ablate GRID [-o OUT] [--dry-run]`` (same as ``avemo ablate``;
    a mistake in the grid is one line and exit 2 in every worker, not a traceback)."""
    return module_main("ablate", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
