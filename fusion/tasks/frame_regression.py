"""Per-frame regression: annotation timelines, windows, overlap-averaged predictions, CCC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor, nn

from avemo.data.annotations import read_annotation, read_clip_annotation
from avemo.fusion.config import ConfigError, EvalConfig
from avemo.fusion.features import FeatureFiles
from avemo.fusion.index import WindowIndex, build_window_index, frame_presence
from avemo.fusion.plots import frame_trace, traces
from avemo.fusion.registry import TASKS
from avemo.fusion.tasks.base import RegressionTask


def read_frame_labels(
    row: Mapping[str, Any] | str, targets: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(time [L], labels [L, n_targets])`` of a manifest row's annotation; NaN = unlabelled.

    Uses ``avemo.data.annotations.read_clip_annotation`` so Aff-Wild2 frame indices become
    seconds with the clip's own frame rate (``video`` / ``fps`` columns).
    """
    df = read_annotation(row) if isinstance(row, str) else read_clip_annotation(row)
    missing = [k for k in ("time", *targets) if k not in df.columns]
    if missing:
        where = row if isinstance(row, str) else row.get("annotation")
        raise ConfigError(
            f"annotation {where} has no column(s) {missing}; data.targets={list(targets)}"
        )
    return df["time"].to_numpy(np.float64), df[list(targets)].to_numpy(np.float64)


@TASKS.register("frame")
class FrameRegression(RegressionTask):
    """Per-frame targets from each clip's annotation file, in windows; 1 - CCC; val/ccc."""

    level = "frame"
    label_column = "annotation"
    prediction_file = "predictions.parquet"
    merge_key = ("clip_id", "time")
    smooths = True
    figure_name = "traces"
    attention_per_clip = False

    def build_index(
        self, manifest: pd.DataFrame, features: FeatureFiles, cache: dict | None
    ) -> WindowIndex:
        cache = cache if cache is not None else {}
        times, labels = [], []
        for row in manifest.to_dict("records"):
            key = ("annotation", str(row["annotation"]), str(row.get("video")), tuple(self.targets))
            if key not in cache:  # label files are shared by the runs of a grid
                cache[key] = read_frame_labels(row, self.targets)
            tt, yy = cache[key]
            times.append(tt)
            labels.append(yy)
        return build_window_index(
            manifest["clip_id"].astype(str).tolist(), times, labels, features, self.data
        )

    def batch_loss(self, loss_fn: nn.Module, out: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        """Loss over the frames where every target is labelled."""
        return loss_fn(out, batch["y"], batch["y_mask"].all(-1))

    def sample_names(self, index: Any, seq: Sequence[int]) -> list[str]:
        return [f"window {i}" for i in seq]

    def unlabelled_index(self, clip_ids: Sequence[str], features: FeatureFiles) -> WindowIndex:
        """Windows over each clip's timeline: the rows of the run's first modality that has
        rows in it (its frames, e.g. face = video frames), since new clips have no annotation."""
        times = [first_timeline(features, list(self.data.features), c) for c in clip_ids]
        labels = [np.full((len(t), self.n_out), np.nan) for t in times]
        return build_window_index(list(clip_ids), times, labels, features, self.data)

    def unlabelled_table(
        self, res: Mapping[str, Any], ev: EvalConfig | None, dm: Any
    ) -> pd.DataFrame:
        """Per timeline frame: each target, its ``eval.smooth``ed value, and each modality's
        presence at that frame."""
        pred = self.clipped(np.asarray(res["pred"]), ev)
        body = pd.DataFrame({"clip_id": res["clip_ids"], "time": np.asarray(res["time"])})
        for j, t in enumerate(self.targets):
            body[t] = pred[:, j]
        smoothed = self.smoothed(pred, np.asarray(res["clip_pos"]), ev)
        if smoothed is not None:
            values, names = smoothed
            for t in names:
                body[f"{t}_smoothed"] = values[:, self.targets.index(t)]
        present = frame_presence(dm.index, dm.arrays, dm.modalities)
        return body.merge(present, on=["clip_id", "time"], how="left", validate="one_to_one")

    def figure(self, table: pd.DataFrame, path: Path) -> Path:
        """Predicted and true traces of a few clips."""
        return traces(table, self.targets, path)

    def plot_clip(
        self, rows: pd.DataFrame, clip_id: str, modalities: Sequence[str], path: Path
    ) -> Path:
        """The predicted traces over time, each modality's presence underneath."""
        return frame_trace(rows, clip_id, self.targets, modalities, path)


def first_timeline(features: FeatureFiles, modalities: Sequence[str], clip_id: str) -> np.ndarray:
    """The times of the first of ``modalities`` that has rows for the clip (else empty)."""
    for m in modalities:
        lo, hi = features.arrays[m].rows_of(clip_id)
        if hi > lo:
            return np.asarray(features.arrays[m].timestamps[lo:hi], np.float64)
    return np.zeros(0)
