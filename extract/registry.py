"""Stage-one registries: feature sets, face detectors, face backbones, audio front-ends/CNNs.

Filled like data adapters and stage-two models (``avemo.data.registry.load_plugins``): every
module of the built-in packages below (a new file in ``extract/video/backbones/``,
``extract/video/detectors/`` or ``extract/audio/`` registers with no list to edit), the modules
named in ``AVEMO_PLUGINS``, and installed packages' entry points (``avemo.feature_sets``,
``avemo.face_backbones``, ...). Then the derived entries: every face backbone gets its
``face_<name>`` feature set (``avemo.extract.video.feature_sets.register_backbone_sets``).
"""

from __future__ import annotations

from collections.abc import Callable

from avemo.data.registry import (
    Registry,
    env_plugins,
    import_modules,
    load_entry_points,
    load_plugins,
)

FEATURE_SETS: Registry = Registry("feature set", group="avemo.feature_sets")
DETECTORS: Registry = Registry("face detector", group="avemo.face_detectors")
BACKBONES: Registry = Registry("face backbone", group="avemo.face_backbones")
CLIP_BACKBONES: Registry = Registry(
    "clip backbone", group="avemo.clip_backbones"
)  # video CNNs over a window of face crops
AUDIO: Registry = Registry("audio front-end / audio CNN", group="avemo.audio")
IDENTITIES: Registry = Registry("face identity embedding", group="avemo.face_identities")
REGISTRIES = (FEATURE_SETS, DETECTORS, BACKBONES, CLIP_BACKBONES, AUDIO, IDENTITIES)

#: Built-in plugins: every module of these packages, cheapest import first (see ``load_for``).
PLUGINS: list[str] = ["avemo.extract.audio", "avemo.extract.video"]

#: Called after every load: entries derived from other registries' entries (a feature set per
#: face backbone) then cover the plugins loaded last (``AVEMO_PLUGINS``, entry points) too.
DERIVED: list[Callable[[], None]] = []


def _derive() -> None:
    for fn in DERIVED:
        fn()


def load_all() -> None:
    """Fill every stage-one registry (``avemo list``): built-ins, ``AVEMO_PLUGINS``, entry points.

    ``AVEMO_PLUGINS=pkg.mod1,pkg.mod2`` adds modules of your own (extra feature sets, a face
    backbone, or the test-only sets the runner tests register) without touching any list.
    """
    load_plugins(PLUGINS, REGISTRIES)
    _derive()


def load_for(feature_sets: list[str] | tuple[str, ...]) -> None:
    """Import plugin packages only until every named feature set is registered.

    An audio-only run then never imports the video stack (torchvision, detectors: seconds of
    start-up per process); an unknown name still ends with everything loaded, so the error
    lists every known set.
    """
    for mod in [*env_plugins(), *PLUGINS]:
        if all(name in FEATURE_SETS for name in feature_sets):
            break
        import_modules(mod)
    load_entry_points(REGISTRIES)  # installed plugins (e.g. a backbone a feature set names)
    _derive()
