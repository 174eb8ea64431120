"""A finished run as one object: ``Run.from_dir(run_dir, checkpoint, device)``.

Everything comes from the run folder, so a machine without the training data can predict:
``config.yaml`` (resolved, absolute paths), ``features.json`` (per modality the feature set,
extractor config and weight checksums new clips must be extracted with), ``data_report.json``
(classes / targets, row shapes), ``normalisation.npz`` (training statistics), the per-speaker
normalisation record, and one state dict under ``checkpoints/`` read with ``weights_only=True``.
The training datamodule (same manifest filtering, split and statistics as training had) is
built only when asked for (``run.dm``, ``run.predictions``), since it reads the training features.

Two rules every caller shares:

* which checkpoint (``checkpoint_path``): ``"swa"`` / ``"best"`` / ``"last"`` is that file or a
  one-line error naming what the folder holds -- never another file in its place; ``None``
  means the weights the run's final metrics were scored with, which is ``swa.pt`` for a run
  with ``trainer.swa``, else ``best.pt`` when the run wrote one and ``last.pt`` when no epoch
  ever improved or nothing was monitored (exactly what ``fit_and_evaluate`` scores);
* which device (``avemo.devices.resolve_device``, stage one's rule too; re-exported here), for
  ``avemo predict --device`` and ``trainer.accelerator``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avemo.data.store import MISSING_MODALITY
from avemo.devices import DeviceFallbackWarning, resolve_device
from avemo.errors import UsageError, UserError
from avemo.fusion.config import RunConfig, load_config
from avemo.fusion.evaluate import predict_partition
from avemo.fusion.features import STATS_FILE, load_stats
from avemo.fusion.registry import build_model
from avemo.fusion.speaker_norm import load as load_speaker_norm
from avemo.fusion.tasks import Task, build_task

CHECKPOINTS = ("swa", "best", "last")  # without a name: the first the run has (its final weights)


class RunFolderError(UserError, ValueError):
    """A run folder that cannot be used: the message says what is missing."""


def checkpoint_path(run_dir: Path, checkpoint: str | None = None) -> Path:
    """``checkpoints/<checkpoint>.pt`` of a run folder (``swa`` / ``best`` / ``last``; ``None``:
    the weights its final metrics came from: ``swa.pt`` (``trainer.swa``), else ``best.pt`` if
    the run wrote one, else ``last.pt``); a missing file is a
    ``RunFolderError`` naming the checkpoints the folder does hold."""
    if checkpoint is not None and checkpoint.removesuffix(".pt") not in CHECKPOINTS:
        raise UsageError(f"--checkpoint must be swa, best or last, got {checkpoint!r}")
    folder = run_dir / "checkpoints"
    want = [checkpoint.removesuffix(".pt")] if checkpoint is not None else list(CHECKPOINTS)
    for name in want:
        if (folder / f"{name}.pt").is_file():
            return folder / f"{name}.pt"
    have = sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []
    asked = (
        f"checkpoints/{want[0]}.pt"
        if checkpoint is not None
        else "checkpoints/swa.pt, best.pt or last.pt"
    )
    hint = (
        f"; it has {', '.join(f'{h}.pt' for h in have)}: use --checkpoint {have[0]}"
        if have
        else " nor any other checkpoint (did the run finish?)"
    )
    raise RunFolderError(f"{run_dir} has no {asked}{hint}")


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise RunFolderError(
            f"{path.parent} has no {path.name} ({what}); is it a finished run "
            "folder from `avemo fuse-train`?"
        )
    return json.loads(path.read_text())


def read_task(run_dir: Path) -> tuple[RunConfig, dict[str, Any], Task]:
    """A run folder's resolved config, data report and task (its classes / targets as trained:
    ``Task.restore``), without the model or any feature file (``avemo report``, ``Run``)."""
    cfg = load_config(run_dir / "config.yaml")
    report = _read_json(run_dir / "data_report.json", "the data report")
    task = build_task(cfg)
    task.restore(report["task"] if "task" in report else {})  # older reports: none
    return cfg, report, task


@dataclass(eq=False)
class Run:
    """A finished run, ready to predict: config, task, input shapes, training statistics and
    model (eval mode) read from its folder; ``dm`` (the training datamodule) on first use."""

    run_dir: Path
    cfg: RunConfig
    features: dict[str, dict[str, Any]]  # modality -> recorded provenance
    task: Task
    inputs: dict[str, tuple[int, ...]]
    model: torch.nn.Module
    checkpoint: Path
    device: torch.device
    trained_without: set[str] = field(default_factory=set)  # modalities it learnt to miss
    speaker_norm: dict[str, Any] = field(default_factory=dict)  # fusion.speaker_norm record
    speaker_ref: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    feature_cache: dict | None = None  # shared with other runs when ``dm`` reads training features
    normalised: bool = False  # the run normalised its inputs (data_report's ``normalised``)

    @classmethod
    def from_dir(
        cls,
        run_dir: str | os.PathLike[str],
        checkpoint: str | None = None,
        device: str | torch.device | None = "cpu",
        feature_cache: dict | None = None,
    ) -> Run:
        """Rebuild a run from its folder alone; ``checkpoint``: see ``checkpoint_path``;
        ``device``: see ``resolve_device``; ``feature_cache``: for ``dm``, as ``build_datamodule``."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise RunFolderError(f"run folder {run_dir} does not exist")
        if not (run_dir / "config.yaml").is_file():
            raise RunFolderError(f"{run_dir} is not a run folder (no config.yaml)")
        ckpt = checkpoint_path(run_dir, checkpoint)
        dev = resolve_device(device)
        cfg, report, task = read_task(run_dir)
        feats = _read_json(run_dir / "features.json", "the feature provenance")
        mods = list(cfg.data.features)
        lost = [m for m in mods if m not in feats]
        if lost:
            raise RunFolderError(f"{run_dir}/features.json lacks modality {lost[0]} of config.yaml")
        inputs = {m: tuple(report["inputs"][m]) for m in mods}
        model = build_model(cfg.model, inputs, task.spec(mods))
        model.load_state_dict(torch.load(ckpt, map_location=dev, weights_only=True))
        model.to(dev).eval()
        data = cfg.data
        without = set(mods) if data.modality_dropout > 0 and len(mods) > 1 else set()
        for key, n in (report.get("status_counts") or {}).items():  # "face:no_video" -> 12
            modality, status = key.split(":", 1)
            if n and (data.non_ok == "keep" or status in MISSING_MODALITY):
                without.add(modality)  # trained with this modality's rows masked in some clips
        record: dict[str, Any] = {}  # fusion.speaker_norm's, when the run used it
        ref: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if data.speaker_norm:
            record, ref = load_speaker_norm(run_dir, cfg)
        normalised = bool(data.normalize and report.get("normalised"))
        return cls(
            run_dir,
            cfg,
            {m: feats[m]["provenance"] for m in mods},
            task,
            inputs,
            model,
            ckpt,
            dev,
            without,
            record,
            ref,
            feature_cache,
            normalised,
        )

    @property
    def modalities(self) -> list[str]:
        return list(self.cfg.data.features)

    def feature_requests(self) -> dict[str, dict[str, Any]]:
        """Modality -> ``{feature_set, config, weights}``: exactly what stage one must make."""
        return {
            m: {k: p.get(k) for k in ("feature_set", "config", "weights", "config_hash")}
            for m, p in self.features.items()
        }

    @cached_property
    def dm(self) -> Any:
        """The training datamodule (``setup`` done: same split and statistics as training);
        reads the training features, so only callers that predict on the run's own clips use it."""
        from avemo.fusion.datamodule import CachedFeatureDataModule

        dm = CachedFeatureDataModule(self.cfg, self.device, self.feature_cache)
        dm.setup("fit")
        return dm

    @cached_property
    def stats(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The training normalisation statistics: ``normalisation.npz``, or for a run written
        before it existed, recomputed from its training data (``dm``)."""
        if not self.normalised:
            return {}
        if (self.run_dir / STATS_FILE).is_file():
            return load_stats(self.run_dir / STATS_FILE, self.device)
        try:  # a run written before the statistics were saved: recompute from its training data
            return self.dm.stats
        except (OSError, UserError) as e:
            raise RunFolderError(
                f"{self.run_dir} has no {STATS_FILE} (a run from before avemo saved its normalisation "
                f"statistics) and its training data cannot be read to recompute them ({e}); "
                "predict on the machine that holds the training features, or retrain"
            ) from None

    def predictions(
        self,
        partition: str | None = None,
        clip_ids: Sequence[str] | None = None,
        missing: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Assembled outputs (``evaluate.predict_partition``) of one of the run's partitions
        (default ``test``), or of ``clip_ids`` of its manifest (registered as partition
        ``"predict"`` with the run's own normalisation and windows)."""
        if clip_ids is not None:
            self.dm.add_partition("predict", list(clip_ids))
            partition = "predict"
        return predict_partition(self.model, self.dm, partition or "test", missing=missing)


__all__ = [
    "CHECKPOINTS",
    "DeviceFallbackWarning",
    "Run",
    "RunFolderError",
    "checkpoint_path",
    "read_task",
    "resolve_device",
]
