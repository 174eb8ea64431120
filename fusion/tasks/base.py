"""The ``Task`` contract: everything that depends on what a run predicts lives in a subclass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from avemo.fusion.registry import TASKS


class Task:
    """Base class of ``TASKS`` entries.

    ``level`` is what the model outputs (``clip``: one vector per clip, ``frame``: one per
    label frame); ``default_loss`` / ``default_monitor`` apply when the config leaves
    ``loss.name`` / ``trainer.monitor`` unset.
    """

    name: ClassVar[str] = ""
    level: ClassVar[str] = "clip"
    default_loss: ClassVar[str] = "cross_entropy"
    default_monitor: ClassVar[str] = "val/accuracy"
    regression: ClassVar[bool] = False

    def __init__(self, data_cfg: Mapping[str, Any]) -> None:
        self.data_cfg = data_cfg
        self.n_out = 0

    def monitor(self, trainer_cfg: Mapping[str, Any] | None = None) -> tuple[str, str]:
        """(metric, mode): ``trainer.monitor`` or the task's default; losses/RMSE minimise."""
        mon = (trainer_cfg or {}).get("monitor") or self.default_monitor
        return mon, ("min" if mon.endswith("loss") or "rmse" in mon else "max")


def build_task(cfg: Mapping[str, Any]) -> Task:
    """The task object of a resolved run config."""
    from avemo.fusion.registry import load_all

    load_all()
    return TASKS.build(cfg["task"]["type"], cfg["data"])
