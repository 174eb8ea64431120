"""Per-clip regression: clip-level targets (e.g. valence/arousal) from manifest columns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from avemo.fusion.config import ConfigError
from avemo.fusion.features import FeatureFiles
from avemo.fusion.index import ClipIndex, build_clip_index
from avemo.fusion.plots import clip_bars, scatter
from avemo.fusion.registry import TASKS
from avemo.fusion.tasks.base import RegressionTask


@TASKS.register("clip_regression")
class ClipRegression(RegressionTask):
    """One value per target per clip (manifest columns ``data.targets``); 1 - CCC; val/ccc."""

    level = "clip"
    prediction_file = "predictions.csv"
    figure_name = "scatter"

    def select(self, df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
        missing = [t for t in self.targets if t not in df.columns]
        if missing:
            raise ConfigError(
                f"task.type=clip_regression needs manifest column(s) {missing} "
                f"(data.targets={self.targets})"
            )
        vals = df[self.targets].apply(pd.to_numeric, errors="coerce")
        keep = vals.notna().all(axis=1)
        if (~keep).sum():
            notes.append(
                f"{int((~keep).sum())} manifest clips lack a value of {self.targets} "
                "and are not used"
            )
        return df[keep].copy()

    def build_index(
        self, manifest: pd.DataFrame, features: FeatureFiles, cache: dict | None
    ) -> ClipIndex:
        y = torch.from_numpy(manifest[self.targets].to_numpy(np.float32))
        return build_clip_index(
            manifest["clip_id"].astype(str).tolist(), features, y, self.data.max_rows
        )

    def unlabelled_index(self, clip_ids: Sequence[str], features: FeatureFiles) -> ClipIndex:
        y = torch.zeros(len(clip_ids), self.n_out)
        return build_clip_index(list(clip_ids), features, y, self.data.max_rows)

    def figure(self, table: pd.DataFrame, path: Path) -> Path:
        """Predicted against true value, one panel per target."""
        return scatter(table, self.targets, path)

    def plot_clip(
        self, rows: pd.DataFrame, clip_id: str, modalities: Sequence[str], path: Path
    ) -> Path:
        """The predicted value of each target as bars."""
        row = rows.iloc[0]
        vals = [row.get(t) for t in self.targets]
        return clip_bars(self.targets, vals, clip_id, row.get("missing"), path)
