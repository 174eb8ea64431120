"""Per-clip classification: one ``label`` per clip; accuracy, UAR, macro-F1, confusion."""

from __future__ import annotations

from avemo.fusion.registry import TASKS
from avemo.fusion.tasks.base import Task


@TASKS.register("clip")
class ClipClassification(Task):
    """One class label per clip (manifest ``label``); cross-entropy; val/accuracy."""

    level = "clip"
    default_loss = "cross_entropy"
    default_monitor = "val/accuracy"
