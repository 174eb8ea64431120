"""What a run predicts: one class per task (``TASKS``), owning labels, targets, index building,
default loss / monitor, evaluation, prediction tables and plots. ``task.type`` names one.

* ``clip``: per-clip classification (``label`` column; accuracy / UAR / macro-F1).
* ``frame``: per-frame regression on each clip's annotation timeline, in windows (CCC).
* ``clip_regression``: per-clip regression of manifest columns ``data.targets`` (CCC).
"""

from avemo.fusion.tasks import clip_classification, clip_regression, frame_regression  # noqa: F401
from avemo.fusion.tasks.base import Task, build_task

__all__ = ["Task", "build_task"]
