"""Finished runs: ``load_run(run_dir)`` rebuilds config, data and model from a run folder.

The run folder's resolved ``config.yaml`` (absolute paths) gives the same manifest filtering,
split and normalisation statistics as training had; the weights come from
``checkpoints/best.pt`` (else ``last.pt``), plain state dicts read with ``weights_only=True``.
Used by ``avemo report`` (attention plots), ``avemo merge`` (fold models on held-out clips)
and prediction on new clips.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avemo.errors import UsageError
from avemo.fusion.datamodule import CachedFeatureDataModule
from avemo.fusion.tasks import Task


@dataclass
class Run:
    """A finished run, ready to predict: its config, datamodule (set up), model (eval mode)."""

    run_dir: Path
    cfg: dict[str, Any]
    dm: CachedFeatureDataModule
    model: torch.nn.Module
    checkpoint: Path

    @property
    def task(self) -> Task:
        return self.dm.task_obj

    def predict(self, partition: str | None = None, clip_ids: Sequence[str] | None = None,
                missing: Sequence[str] = ()) -> dict[str, Any]:
        """Assembled outputs of a partition, or of ``clip_ids`` (registered as partition
        ``"predict"`` with the run's own normalisation and windows)."""
        from avemo.fusion.evaluate import predict

        if clip_ids is not None:
            self.dm.add_partition("predict", list(clip_ids))
            partition = "predict"
        return predict(self.model, self.dm, partition or "test", missing=missing)


def load_run(run_dir: str | os.PathLike[str], feature_cache: dict | None = None, device: str = "cpu",
             checkpoint: str = "best.pt") -> Run:
    """Rebuild a finished run from its folder (``checkpoint``, else ``last.pt``)."""
    from avemo.fusion.config import load_config
    from avemo.fusion.train import build_datamodule, build_model

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UsageError(f"{run_dir} is not a run folder (no config.yaml)")
    ckpt = run_dir / "checkpoints" / checkpoint
    if not ckpt.exists():
        ckpt = run_dir / "checkpoints" / "last.pt"
    if not ckpt.exists():
        raise UsageError(f"{run_dir} has no checkpoints/{checkpoint} or last.pt (did it finish?)")
    cfg = load_config(run_dir / "config.yaml")
    dm = build_datamodule(cfg, device, feature_cache)
    model = build_model(cfg, dm)
    model.load_state_dict(torch.load(ckpt, map_location=device, weights_only=True))
    model.to(device).eval()
    return Run(run_dir, cfg, dm, model, ckpt)
