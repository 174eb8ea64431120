"""Stage-two registries: full models, temporal modules, cross-modal fusion, encoders, losses.

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
    "avemo.fusion.losses",
]


def load_all() -> None:
    """Import every plugin module so the registries are complete."""
    for mod in PLUGIN_MODULES:
        importlib.import_module(mod)
