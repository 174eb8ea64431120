"""The trainer of ablation grids: ``train_from_config`` with one prepared datamodule per data side.

Cells of a grid that differ only in the model, the optimiser or the batch-order seed read the
same manifest, split and normalisation statistics; preparing those once per data side (not once
per cell) is what makes a grid of many small runs fast. ``avemo.workflows.ablation`` calls it
for every cell and, for stacked units, asks it for the shared datamodule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avemo.fusion import train
from avemo.fusion.config import RunConfig, dump_config, load_config, run_config


class SharedDataTrainer:
    """``train_from_config`` for grids: cells whose data side is identical (same ``data``,
    ``split``, ``task`` and, when the split shuffles, seed) share one prepared datamodule --
    manifest read, split, index tables and normalisation statistics are built once, not per
    cell. Only the batch-order seed is set per cell, so every run equals its stand-alone
    ``avemo fuse-train`` run.
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._dms: dict[str, Any] = {}

    @staticmethod
    def data_key(cfg: RunConfig | Mapping[str, Any], device: str) -> str:
        """What makes two configs' prepared datamodules interchangeable (JSON, comparable)."""
        cfg = run_config(cfg)
        key: dict[str, Any] = {
            "data": cfg.data.model_dump(),
            "split": cfg.split.model_dump(),
            "task": cfg.task.model_dump(),
        }
        if cfg.split.shuffle:
            key["seed"] = cfg.seed
        return json.dumps([key, device], sort_keys=True, default=str)

    def __call__(
        self,
        config: Any,
        overrides: Sequence[str] | None = None,
        *,
        feature_cache: dict | None = None,
        run_dir: Path | None = None,
    ) -> Mapping[str, Any]:
        cfg = load_config(config, list(overrides or []))
        run_dir = train.make_run_dir(cfg, run_dir)
        dump_config(cfg, run_dir / "config.yaml")
        dm = self.datamodule(cfg, feature_cache)
        dm.seed = cfg.seed  # per-run batch order, as in a fresh datamodule
        return train.fit_and_evaluate(cfg, dm, run_dir)  # also writes the run's data side

    def datamodule(self, cfg: RunConfig | Mapping[str, Any], feature_cache: dict | None) -> Any:
        """The prepared datamodule of ``cfg``'s data side (built once, kept for ``keep`` keys)."""
        cfg = run_config(cfg)
        device, _ = train.trainer_device(cfg.trainer.accelerator)
        key = self.data_key(cfg, device)
        dm = self._dms.pop(key, None)
        if dm is None:
            dm = train.build_datamodule(cfg, device, feature_cache)
        self._dms[key] = dm  # most recently used last
        while len(self._dms) > self.keep:
            self._dms.pop(next(iter(self._dms)))
        return dm
