"""A thin LightningDataModule: the feature side + the task's index of samples + device batches.

Three parts, each in its own module:

* ``fusion.features.FeatureFiles`` -- feature arrays on the device, shared across runs
  (loading, cache, provenance, normalisation statistics);
* ``fusion.index`` -- which rows make each sequence (built by the task: one per clip, or
  windows over label timelines);
* this module -- the manifest filtered to usable labelled clips, the split, and batches.

A batch is ``values[index_table[start + arange(T)]]`` plus a mask, normalised on the fly with
training-split statistics, all on the device (no per-sample loading, no workers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from avemo.data.manifest import load_manifest
from avemo.fusion import speaker_norm as sn
from avemo.fusion.config import ConfigError, RunConfig, run_config
from avemo.fusion.features import (  # noqa: F401 - re-exported
    FeatureArrays,
    FeatureFiles,
    check_expectation,
    load_features,
)
from avemo.fusion.index import overlap_average, window_starts  # noqa: F401 - re-exported
from avemo.fusion.models.base import zero_invalid_
from avemo.fusion.spec import TaskSpec
from avemo.fusion.splits import make_splits
from avemo.fusion.tasks import Task, build_task
from avemo.fusion.tasks.frame_regression import read_frame_labels  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


class CachedFeatureDataModule(L.LightningDataModule):
    """LightningDataModule over cached feature sets; everything lives on ``device``.

    Use ``gather`` / ``batches`` directly (ablation grids) or through Lightning's
    ``train_dataloader`` / ``val_dataloader`` (they return ``DeviceBatches`` iterables).
    ``task`` (a ``fusion.tasks.Task``; the config's unless given) decides labels, index, loss
    and evaluation; models get ``spec`` (a ``fusion.spec.TaskSpec``).
    """

    def __init__(
        self,
        cfg: RunConfig | Mapping[str, Any],
        device: str | torch.device = "cpu",
        feature_cache: dict | None = None,
        manifest: pd.DataFrame | None = None,
        task: Task | None = None,
    ) -> None:
        super().__init__()
        self.cfg = run_config(cfg)
        self.data_cfg = self.cfg.data
        self.device = torch.device(device)
        self.feature_cache = feature_cache
        self._manifest = manifest
        self.task: Task = task if task is not None else build_task(self.cfg)
        self.modalities: list[str] = list(self.data_cfg.features)
        self.notes: list[str] = []
        self.speakers: dict[str, str] = {}  # clip -> speaker its features were normalised with
        self._ready = False
        self.seed = self.cfg.seed
        self.epoch = 0

    @classmethod
    def unlabelled(
        cls,
        cfg: RunConfig,
        task: Task,
        features: FeatureFiles,
        stats: Mapping[str, tuple[Tensor, Tensor]],
        clip_ids: Sequence[str],
        device: str | torch.device = "cpu",
        speakers: Mapping[str, str] | None = None,
    ) -> CachedFeatureDataModule:
        """A ready datamodule over new clips with no labels (``avemo predict``): a finished
        run's config, task and normalisation statistics, one partition ``predict``; no manifest
        or split is read. ``speakers``: clip -> speaker the features were normalised with."""
        dm = cls(cfg, device, task=task)
        ids = list(clip_ids)
        dm.features, dm.stats, dm.speakers = features, dict(stats), dict(speakers or {})
        dm.manifest = pd.DataFrame({"clip_id": ids})
        dm.pos = {c: i for i, c in enumerate(ids)}
        dm.index = task.unlabelled_index(ids, features)
        dm.part_seqs = {"predict": dm._sequences(ids)}
        dm._ready = True
        return dm

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        d = self.data_cfg
        df = (
            self._manifest
            if self._manifest is not None
            else load_manifest(d.manifest, classes=d.classes, check_files=False)
        )
        self.features = FeatureFiles(d, self.device, self.feature_cache)
        df = self.task.select(df, self.notes)
        df = self.features.present(df, self.notes)
        df = self.features.status_filter(df, self.notes)
        if df.empty:
            raise ConfigError(
                "no clips left to train on (see the notes above: " + "; ".join(self.notes) + ")"
            )
        self.manifest = df.reset_index(drop=True)
        self.splits = make_splits(
            self.manifest,
            self.cfg.split,
            self.seed,
            self.task.split_labels(self.manifest),
            self.notes,
        )
        parts = self.splits["partitions"]
        self.speaker_norm: dict[str, Any] | None = None
        if d.speaker_norm:  # per speaker, its own unlabelled clips (fusion.speaker_norm)
            self._speaker_norm(parts["train"])
        elif gated := [m for m in d.speaker_norm_only if m in self.features.arrays]:
            self.features.arrays = sn.gated(self.features.arrays, "off", gated)
            self.notes.append(
                f"{', '.join(gated)} masked: data.speaker_norm_only streams are used only when "
                "normalised per speaker, and data.speaker_norm is off"
            )
        if not parts["val"]:
            self.notes.append("no validation or test clips: validating on the training clips")
            parts["val"] = list(parts["train"])
        self.pos = {c: i for i, c in enumerate(self.manifest["clip_id"].astype(str))}
        self.index = self.task.build_index(self.manifest, self.features, self.feature_cache)
        self.part_seqs = {p: self._sequences(ids) for p, ids in parts.items()}
        self.stats = self.features.stats(parts["train"], self.notes) if d.normalize else {}
        for n in self.notes:
            log.info(n)
        self._ready = True

    def _speaker_norm(self, train: Sequence[str]) -> None:
        """Normalise every stream per speaker in the configured mode; ``auto`` chooses it on the
        training clips' speakers only. The record goes to the run folder (``speaker_norm.save``)."""
        ids = self.manifest["clip_id"].astype(str)
        who = dict(zip(ids, self.manifest["subject"].astype(str), strict=True))
        labels = self.task.split_labels(self.manifest)
        try:
            arrays, self.speaker_norm = sn.apply(
                self.features.arrays,
                who,
                self.data_cfg.speaker_norm,
                list(train),
                None if labels is None else dict(zip(ids, labels, strict=True)),
                self.data_cfg.speaker_norm_prior,
                self.data_cfg.speaker_norm_rule,
                self.data_cfg.speaker_norm_only,
                self.data_cfg.speaker_norm_only_modes,
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.features.arrays = arrays
        self.notes.append(sn.describe(self.speaker_norm["record"]))

    def add_partition(self, name: str, clip_ids: Sequence[str]) -> None:
        """Register extra clips (e.g. a held-out test set for fold merging) as partition ``name``,
        predicted with the same normalisation, windows and batching as the run's own partitions."""
        missing = [c for c in clip_ids if c not in self.pos]
        if missing:
            raise KeyError(f"clips not in this datamodule: {missing[:10]}")
        self.part_seqs[name] = self._sequences(clip_ids)

    def _sequences(self, clip_ids: Sequence[str]) -> Tensor:
        """Sequence ids (clip positions, or window ids) of a partition."""
        return self.index.sequences(np.array([self.pos[c] for c in clip_ids], np.int64))

    # ------------------------------------------------------------------ views

    @property
    def arrays(self) -> dict[str, FeatureArrays]:
        return self.features.arrays

    @property
    def tables(self) -> Any:
        """The run's index of samples (``fusion.index``)."""
        return self.index

    @property
    def aligned(self) -> dict[str, Tensor]:
        return self.index.aligned

    @property
    def status_counts(self) -> dict[str, int]:
        return self.features.status_counts

    @property
    def inputs(self) -> dict[str, tuple[int, ...]]:
        """``{modality: row_shape}`` for ``MODELS.build(inputs=...)``."""
        return self.features.inputs

    @property
    def spec(self) -> TaskSpec:
        """What models see (``MODELS.build(task=dm.spec)``): level, width, names, modalities."""
        return self.task.spec(self.modalities)

    # ------------------------------------------------------------------ batches

    def gather(
        self,
        seq: Tensor,
        dropout: float = 0.0,
        missing: Sequence[str] = (),
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Batch of sequences ``seq`` built on the device: padded values, masks, labels."""
        t = self.index
        batch: dict[str, Tensor] = {"index": seq}
        where = t.positions(seq)
        for m in self.modalities:
            a = self.arrays[m]
            pos, valid = where[m]
            rows = t.idx[m][pos]
            mask = valid & t.ok[m][pos]
            if m not in t.aligned:
                mask &= a.row_mask[rows]
            # one index_select copy, then in-place normalisation (memory-bound: few passes)
            src = t.source(m, a)
            x = src.index_select(0, rows.reshape(-1)).view(*rows.shape, *a.row_shape).float()
            if m in self.stats:
                mean, inv_std = self.stats[m]
                torch.addcmul(-mean * inv_std, x, inv_std, out=x)  # (x - mean) / std, one pass
            if m in missing:
                mask = torch.zeros_like(mask)
            batch[m] = x
            batch[f"{m}_mask"] = mask
        if dropout > 0 and len(self.modalities) > 1:
            drop = torch.rand(len(seq), generator=generator, device="cpu") < dropout
            which = torch.randint(
                len(self.modalities), (len(seq),), generator=generator, device="cpu"
            )
            for i, m in enumerate(self.modalities):
                gone = (drop & (which == i)).to(self.device)
                batch[f"{m}_mask"] = batch[f"{m}_mask"] & ~gone[:, None]
        for m in self.modalities:  # masked rows are zero (models must not rely on it)
            zero_invalid_(batch[m], batch[f"{m}_mask"])
        batch.update(t.labels(seq))
        return batch

    def batches(
        self,
        partition: str,
        batch_size: int | None = None,
        shuffle: bool = False,
        dropout: float = 0.0,
        missing: Sequence[str] = (),
    ) -> DeviceBatches:
        d = self.data_cfg
        bs = batch_size or (d.batch_size if partition == "train" else d.eval_batch_size)
        return DeviceBatches(self, self.part_seqs[partition], bs, shuffle, dropout, missing)

    def train_dataloader(self) -> DeviceBatches:
        return self.batches("train", shuffle=True, dropout=self.data_cfg.modality_dropout)

    def val_dataloader(self) -> DeviceBatches:
        return self.batches("val")

    def test_dataloader(self) -> DeviceBatches:
        return self.batches("test")

    def assemble(self, seq: Tensor, out: Tensor) -> dict[str, Any]:
        """Per-sequence outputs -> the task's per-clip / per-frame result (numpy)."""
        return self.task.assemble(self.index, seq, out)


class DeviceBatches:
    """Iterable of device batches for one partition; a fresh seeded order every epoch."""

    def __init__(
        self,
        dm: CachedFeatureDataModule,
        seqs: Tensor,
        batch_size: int,
        shuffle: bool,
        dropout: float = 0.0,
        missing: Sequence[str] = (),
    ) -> None:
        self.dm, self.seqs, self.batch_size = dm, seqs, max(1, batch_size)
        self.shuffle, self.dropout, self.missing = shuffle, dropout, tuple(missing)
        self._epoch = 0

    def __len__(self) -> int:
        return (len(self.seqs) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        g = torch.Generator().manual_seed(self.dm.seed * 100003 + self._epoch)
        self._epoch += 1
        order = self.seqs
        if self.shuffle:
            order = self.seqs[torch.randperm(len(self.seqs), generator=g).to(self.seqs.device)]
        for i in range(0, len(order), self.batch_size):
            yield self.dm.gather(order[i : i + self.batch_size], self.dropout, self.missing, g)
