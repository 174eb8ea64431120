"""Per-frame regression: annotation timelines, windows, overlap-averaged predictions, CCC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor, nn

from avemo.fusion.config import ConfigError
from avemo.fusion.features import FeatureSet
from avemo.fusion.index import WindowIndex, build_window_index
from avemo.fusion.registry import TASKS
from avemo.fusion.tasks.base import RegressionTask


def read_frame_labels(
    row: Mapping[str, Any] | str, targets: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(time [L], labels [L, n_targets])`` of a manifest row's annotation; NaN = unlabelled.

    Uses ``avemo.data.annotations.read_clip_annotation`` so Aff-Wild2 frame indices become
    seconds with the clip's own frame rate (``video`` / ``fps`` columns).
    """
    from avemo.data.annotations import read_annotation, read_clip_annotation

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

    def build_index(
        self, manifest: pd.DataFrame, features: FeatureSet, cache: dict | None
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
            manifest["clip_id"].astype(str).tolist(), times, labels, features, self.data_cfg
        )

    def batch_loss(self, loss_fn: nn.Module, out: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        """Loss over the frames where every target is labelled."""
        return loss_fn(out, batch["y"], batch["y_mask"].all(-1))

    def sample_names(self, index: Any, seq: Sequence[int]) -> list[str]:
        return [f"window {i}" for i in seq]

    def plot(self, out: Path, table: pd.DataFrame, extra: Mapping[str, Any]) -> list[Path]:
        from avemo.fusion.plots import traces

        if not len(table):
            return []
        return [
            traces(table[table["partition"] == part], self.targets, out / f"traces_{part}.png")
            for part in dict.fromkeys(table["partition"])
        ]
