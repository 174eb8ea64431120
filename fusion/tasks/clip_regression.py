"""Per-clip regression: clip-level targets (e.g. valence/arousal) from manifest columns."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from avemo.fusion.config import ConfigError
from avemo.fusion.features import FeatureSet
from avemo.fusion.index import ClipIndex, build_clip_index
from avemo.fusion.registry import TASKS
from avemo.fusion.tasks.base import RegressionTask


@TASKS.register("clip_regression")
class ClipRegression(RegressionTask):
    """One value per target per clip (manifest columns ``data.targets``); 1 - CCC; val/ccc."""

    level = "clip"
    prediction_file = "predictions.csv"

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
        self, manifest: pd.DataFrame, features: FeatureSet, cache: dict | None
    ) -> ClipIndex:
        y = torch.from_numpy(manifest[self.targets].to_numpy(np.float32))
        return build_clip_index(
            manifest["clip_id"].astype(str).tolist(), features, y, self.data_cfg.get("max_rows")
        )

    def plot(self, out: Path, table: pd.DataFrame, extra: Mapping[str, Any]) -> list[Path]:
        from avemo.fusion.plots import scatter

        if not len(table):
            return []
        return [
            scatter(table[table["partition"] == part], self.targets, out / f"scatter_{part}.png")
            for part in dict.fromkeys(table["partition"])
        ]
