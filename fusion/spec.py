"""What a model is told about the task: a small frozen ``TaskSpec``.

Models need to know what to output, not how labels are read or scored, so they receive this
value (built by the task: ``fusion.tasks.Task.spec``) rather than the task object. This module
imports nothing of avemo, so a model (built in or a plugin) imports it without pulling in
tasks, the datamodule or Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

LEVELS = ("clip", "frame")

Level = Literal["clip", "frame"]


@dataclass(frozen=True)
class TaskSpec:
    """``level``: one output vector per clip (``[B, n_out]``) or per label frame
    (``[B, T, n_out]``); ``n_out``: its width; ``classes`` (classification) or ``targets``
    (regression) name its columns; ``modalities``: the run's inputs, in config order."""

    level: Level
    n_out: int
    classes: tuple[str, ...] | None = None
    targets: tuple[str, ...] | None = None
    modalities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"task type (level) must be one of {LEVELS}, got {self.level!r}")
        if isinstance(self.n_out, bool) or int(self.n_out) < 1:
            raise ValueError(f"task n_out must be >= 1, got {self.n_out!r}")
        object.__setattr__(self, "n_out", int(self.n_out))
        for name in ("classes", "targets"):
            names = getattr(self, name)
            if names is not None:
                names = tuple(str(c) for c in names)
                if len(names) != self.n_out:
                    raise ValueError(f"{len(names)} {name} for n_out={self.n_out}: {names}")
                object.__setattr__(self, name, names)
        object.__setattr__(self, "modalities", tuple(str(m) for m in self.modalities))

    @property
    def frame(self) -> bool:
        """Outputs per frame on a shared timeline (``[B, T, n_out]``)."""
        return self.level == "frame"

    @classmethod
    def coerce(cls, task: Any) -> TaskSpec:
        """``task`` itself when it is a ``TaskSpec`` (a task's ``spec()``, or built by hand:
        ``TaskSpec("clip", 7)``); anything else is a ``ValueError`` saying so."""
        if isinstance(task, TaskSpec):
            return task
        raise ValueError(
            f"task must be a TaskSpec (avemo.fusion.spec; e.g. TaskSpec('clip', 7)), got {task!r}"
        )
