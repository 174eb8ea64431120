"""Stage-one registries: feature sets, face detectors, face backbones, audio front-ends/CNNs."""

from __future__ import annotations

from avemo.data.registry import Registry

FEATURE_SETS: Registry = Registry("feature set")
DETECTORS: Registry = Registry("face detector")
BACKBONES: Registry = Registry("face backbone")
AUDIO: Registry = Registry("audio front-end / audio CNN")

# Modules that register into the registries above; imported by ``load_all``.
PLUGIN_MODULES: list[str] = [
    "avemo.extract.video.feature_sets",
    "avemo.extract.audio.feature_sets",
]


def load_all() -> None:
    """Import every plugin module so the registries are complete (``avemo list``)."""
    import importlib

    for mod in PLUGIN_MODULES:
        importlib.import_module(mod)
