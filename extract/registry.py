"""Stage-one registries: feature sets, face detectors, face backbones, audio front-ends/CNNs."""

from __future__ import annotations

from avemo.data.registry import Registry, env_plugins, load_entry_points

FEATURE_SETS: Registry = Registry("feature set", group="avemo.feature_sets")
DETECTORS: Registry = Registry("face detector", group="avemo.face_detectors")
BACKBONES: Registry = Registry("face backbone", group="avemo.face_backbones")
CLIP_BACKBONES: Registry = Registry("clip backbone", group="avemo.clip_backbones")  # video CNNs over a window of face crops
AUDIO: Registry = Registry("audio front-end / audio CNN", group="avemo.audio")
IDENTITIES: Registry = Registry("face identity embedding", group="avemo.face_identities")

# Modules that register into the registries above; imported by ``load_all``.
PLUGIN_MODULES: list[str] = [  # cheapest import first (see ``load_for``)
    "avemo.extract.audio.feature_sets",
    "avemo.extract.video.feature_sets",
    "avemo.extract.video.windowed",
]


def _registries() -> list[Registry]:
    return [v for v in globals().values() if isinstance(v, Registry)]


def _plugin_modules() -> list[str]:
    return [*env_plugins(), *PLUGIN_MODULES]


def _import(mod: str) -> None:
    import importlib

    try:
        importlib.import_module(mod)
    except ModuleNotFoundError as e:
        # a built-in plugin package not written yet; a missing dependency inside one still fails
        if mod in PLUGIN_MODULES and e.name is not None and (mod == e.name or mod.startswith(e.name + ".")):
            return
        raise


def load_all() -> None:
    """Import every plugin module so the registries are complete (``avemo list``).

    ``AVEMO_PLUGINS=pkg.mod1,pkg.mod2`` adds modules of your own (extra feature sets, or the
    test-only ones the runner tests register) without touching this list; installed packages
    add theirs through entry points (``avemo.feature_sets``, ``avemo.face_backbones``, ...;
    see ``avemo.data.registry``).
    """
    for mod in _plugin_modules():
        _import(mod)
    load_entry_points(_registries())


def load_for(feature_sets: list[str] | tuple[str, ...]) -> None:
    """Import plugin modules only until every named feature set is registered.

    An audio-only run then never imports the video stack (torchvision, detectors: seconds of
    start-up per process); an unknown name still ends with everything loaded, so the error
    lists every known set.
    """
    for mod in _plugin_modules():
        if all(name in FEATURE_SETS for name in feature_sets):
            break
        _import(mod)
    load_entry_points(_registries())  # installed plugins (e.g. a backbone a feature set names)
