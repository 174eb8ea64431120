"""Per-clip regression: clip-level targets (e.g. valence/arousal) from manifest columns."""

from __future__ import annotations

from avemo.fusion.registry import TASKS
from avemo.fusion.tasks.base import Task


@TASKS.register("clip_regression")
class ClipRegression(Task):
    """One value per target per clip (manifest columns ``data.targets``); 1 - CCC; val/ccc."""

    level = "clip"
    default_loss = "ccc"
    default_monitor = "val/ccc"
    regression = True
