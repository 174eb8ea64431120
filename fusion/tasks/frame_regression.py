"""Per-frame regression: annotation timelines, windows, overlap-averaged predictions, CCC."""

from __future__ import annotations

from avemo.fusion.registry import TASKS
from avemo.fusion.tasks.base import Task


@TASKS.register("frame")
class FrameRegression(Task):
    """Per-frame targets from each clip's annotation file; 1 - CCC; val/ccc."""

    level = "frame"
    default_loss = "ccc"
    default_monitor = "val/ccc"
    regression = True
