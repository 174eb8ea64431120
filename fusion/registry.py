"""Stage-two registries: tasks, full models, temporal modules, cross-modal fusion, encoders,
losses, optimisers and learning-rate schedules.

Configs name things; ``MODELS.build(name, inputs=..., task=..., **cfg)`` builds a model
(see ``avemo.fusion.models.base`` for the batch / output contract). ``avemo list models``
reads ``MODELS`` after ``load_all()``.
"""

from __future__ import annotations

import importlib

from avemo.data.registry import Registry

MODELS: Registry = Registry("fusion model")
TEMPORAL: Registry = Registry("temporal module")
FUSION: Registry = Registry("cross-modal fusion")
ENCODERS: Registry = Registry("input encoder")
LOSSES: Registry = Registry("loss")
TASKS: Registry = Registry("task")
OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("lr schedule")

#: Model constructor arguments that name a sub-module (``*encoder`` arguments: ENCODERS).
SUBMODULE_REGISTRIES: dict[str, Registry] = {"fusion": FUSION, "temporal": TEMPORAL,
                                             "encoder": ENCODERS}
#: What the trainer passes every schedule (not settable from a config).
SCHEDULE_INJECTED = ("opt", "monitor", "mode", "max_epochs", "base_lr")
LOSS_ALIASES = {"ce": "cross_entropy"}

# Modules that register into the registries above; imported by ``load_all``.
PLUGIN_MODULES: list[str] = [
    "avemo.fusion.models.temporal_pool",
    "avemo.fusion.models.temporal_fan",
    "avemo.fusion.models.temporal_transformer",
    "avemo.fusion.models.tcn",
    "avemo.fusion.models.bilstm",
    "avemo.fusion.models.encoder_vector",
    "avemo.fusion.models.encoder_audio_cnn",
    "avemo.fusion.models.fusion_concat",
    "avemo.fusion.models.fbp",
    "avemo.fusion.models.unimodal",
    "avemo.fusion.models.zhou",
    "avemo.fusion.models.attention_fbp",
    "avemo.fusion.models.jca",
    "avemo.fusion.models.lfan",
    "avemo.fusion.models.late",
    "avemo.fusion.models.encoder_descriptors",
    "avemo.fusion.losses",
    "avemo.fusion.optim",
    "avemo.fusion.tasks",
]


def load_all() -> None:
    """Import every plugin module so the registries are complete."""
    for mod in PLUGIN_MODULES:
        importlib.import_module(mod)
