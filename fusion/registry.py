"""Stage-two registries: tasks, full models, temporal modules, cross-modal fusion, encoders,
losses, optimisers and learning-rate schedules.

Configs name things; ``build_model(cfg.model, inputs, spec)`` builds a model
(see ``avemo.fusion.models.base`` for the batch / output contract). ``avemo list models``
reads ``MODELS`` after ``load_all()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from avemo.data.registry import Registry, load_plugins

if TYPE_CHECKING:  # annotations only: the models import this module
    from torch import nn

    from avemo.fusion.config import ModelConfig
    from avemo.fusion.spec import TaskSpec

MODELS: Registry = Registry("fusion model", group="avemo.fusion_models")
TEMPORAL: Registry = Registry("temporal module", group="avemo.temporal_modules")
FUSION: Registry = Registry("cross-modal fusion", group="avemo.fusions")
ENCODERS: Registry = Registry("input encoder", group="avemo.encoders")
LOSSES: Registry = Registry("loss", group="avemo.losses")
TASKS: Registry = Registry("task", group="avemo.tasks")
OPTIMIZERS: Registry = Registry("optimizer", group="avemo.optimizers")
SCHEDULES: Registry = Registry("lr schedule", group="avemo.schedules")
REGISTRIES = (MODELS, TEMPORAL, FUSION, ENCODERS, LOSSES, TASKS, OPTIMIZERS, SCHEDULES)

#: Model constructor arguments that name a sub-module (``*encoder`` arguments: ENCODERS).
SUBMODULE_REGISTRIES: dict[str, Registry] = {
    "fusion": FUSION,
    "temporal": TEMPORAL,
    "encoder": ENCODERS,
}
#: What the trainer passes every schedule (not settable from a config).
SCHEDULE_INJECTED = ("opt", "monitor", "mode", "max_epochs", "base_lr")
LOSS_ALIASES = {"ce": "cross_entropy"}

#: Built-in plugins: every module of these packages / these modules (``load_plugins``).
PLUGINS: list[str] = [
    "avemo.fusion.models",
    "avemo.fusion.tasks",
    "avemo.fusion.losses",
    "avemo.fusion.optim",
]
_loaded = False


def load_all() -> None:
    """Fill the registries: built-ins, ``AVEMO_PLUGINS`` modules, entry points (once)."""
    global _loaded
    if not _loaded:
        load_plugins(PLUGINS, REGISTRIES)
        _loaded = True


def build_model(
    model: ModelConfig, inputs: Mapping[str, tuple[int, ...]], spec: TaskSpec
) -> nn.Module:
    """The ``MODELS`` entry a config's ``model`` section names, for ``inputs`` (modality ->
    row shape) and the task ``spec``; a plugin that fails to import matters only when it is
    the one asked for."""
    try:
        load_all()
    except ImportError:
        if model.name not in MODELS:
            raise
    return MODELS.build(model.name, inputs=inputs, task=spec, **model.options())
