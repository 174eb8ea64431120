"""The contract between the extraction runner and every feature set."""

from __future__ import annotations

import functools
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from avemo.data.registry import RegisteredName
from avemo.data.store import ClipFeatures, make_provenance
from avemo.errors import FeatureConfigError, did_you_mean
from avemo.extract.registry import FEATURE_SETS


@dataclass(frozen=True)
class ClipInput:
    """One manifest row as the extractors see it."""

    clip_id: str
    video: str | None = None
    audio: str | None = None


@dataclass(frozen=True)
class Param:
    """What one config key accepts beyond the type its default value implies.

    Checked by ``FeatureSet.check_config`` before any clip is read, so a typo or an impossible
    value is one message and exit 2, never a feature file full of ``error`` rows.
    """

    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound (``> 0``)
    choices: tuple[Any, ...] | None = None
    types: tuple[type, ...] | None = None  # when the default (e.g. None) does not say
    nullable: bool = False  # None accepted although the default is not None
    length: int | None = None  # lists: exact number of items

    def describe(self) -> str:
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(map(repr, self.choices)))
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts)


_TYPE_WORDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def _kind(default: Any) -> type | None:
    """The type a key's default implies (None: any)."""
    for t in (bool, int, float, str):
        if type(default) is t:
            return t
    if isinstance(default, list | tuple):
        return list
    if isinstance(default, Mapping):
        return dict
    return None


def _ok(value: Any, kind: type | None) -> bool:
    """Whether ``value`` is accepted as ``kind`` (ints are numbers, bools are not)."""
    if kind is None:
        return True
    if kind in (int, float) and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    if kind is list:
        return isinstance(value, list | tuple)
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


def _coerce(value: Any, kind: type | None) -> Any:
    """An accepted ``value`` stored as ``kind``: floats as float, so 25 and 25.0 hash the same."""
    if kind is float:
        return float(value)
    if kind is list:
        return list(value)
    return value


class FeatureSet(ABC):
    """A named extractor whose output is one HDF5 feature file.

    Subclasses declare ``default_config`` (every parameter that changes the numbers: it is
    recorded in provenance and hashed) and implement ``extract``, which must yield exactly one
    ``ClipFeatures`` per input clip and never raise for a bad clip (status ``error`` instead).
    """

    name = RegisteredName(FEATURE_SETS)  # the key in @FEATURE_SETS.register("...")
    modality: ClassVar[str] = "video"  # which manifest column the set reads: "video" or "audio"
    default_config: ClassVar[dict[str, Any]] = {}
    #: per-key range / allowed values (merged along the class hierarchy); types come from defaults
    config_params: ClassVar[dict[str, Param]] = {}

    def __init__(self, config: Mapping[str, Any] | None = None, device: str = "cpu") -> None:
        self.config: dict[str, Any] = self.check_config(config)
        self.device = device

    @classmethod
    def params(cls) -> dict[str, Param]:
        out: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("config_params", {}))
        return out

    @classmethod
    def check_config(cls, config: Mapping[str, Any] | None) -> dict[str, Any]:
        """The full config (defaults + ``config``), or FeatureConfigError naming the first bad key.

        Every key must be known; its value must have the type of its default (None defaults
        take anything unless a ``Param`` says otherwise) and satisfy its ``Param``.
        """
        where = f"feature set {cls.name}"
        if config is not None and not isinstance(config, Mapping):
            raise FeatureConfigError(
                f"{where}: config must be a mapping of key: value, got {config!r}"
            )
        config = dict(config or {})
        unknown = sorted(set(config) - set(cls.default_config))
        if unknown:
            hint = did_you_mean(unknown[0], cls.default_config)
            raise FeatureConfigError(
                f"unknown config keys for {where}: {', '.join(map(str, unknown))}{hint} "
                f"Known keys: {', '.join(sorted(cls.default_config))}"
            )
        params = cls.params()
        out = dict(cls.default_config)
        for key, value in config.items():
            default = cls.default_config[key]
            p = params.get(key, Param())
            if value is None and (default is None or p.nullable):
                out[key] = None
                continue
            kinds = p.types or ((_kind(default),) if _kind(default) else ())
            if kinds == (list,) and default and all(_ok(d, float) for d in default):
                kinds = (list, float)  # e.g. detector thresholds: a list, or one value
            kind = next((k for k in kinds if _ok(value, k)), None)
            if kinds and kind is None:
                words = " or ".join(_TYPE_WORDS[k] for k in kinds)
                null = " (or null)" if default is None or p.nullable else ""
                raise FeatureConfigError(
                    f"{where}: {key} must be {words}{null}, got {value!r} ({type(value).__name__})"
                )
            value = _coerce(value, kind)
            _check_range(key, value, p, where)
            out[key] = value
        return out

    def weights(self) -> dict[str, str]:
        """Weight name -> sha256 of every pretrained file used (recorded in provenance)."""
        return {}

    @property
    def rate_hz(self) -> float | None:
        """Nominal rows per second (None when rows follow the video's own frames)."""
        return None

    def provenance(self) -> dict[str, Any]:
        return make_provenance(
            self.name, self.config, self.weights(), self.rate_hz, _versions(self.modality)
        )

    @abstractmethod
    def extract(self, clips: Sequence[ClipInput]) -> Iterator[ClipFeatures]:
        """Yield one result per clip (any order)."""


def _check_range(key: str, value: Any, p: Param, where: str) -> None:
    bad = False
    if p.choices is not None and value not in p.choices:
        bad = True
    items = value if isinstance(value, list) else [value]
    if p.length is not None and isinstance(value, list) and len(value) != p.length:
        raise FeatureConfigError(f"{where}: {key} must have {p.length} items, got {value!r}")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            if (p.min, p.max, p.above) != (None, None, None):
                raise FeatureConfigError(f"{where}: {key} must hold numbers, got {value!r}")
            continue
        if (
            (p.min is not None and v < p.min)
            or (p.max is not None and v > p.max)
            or (p.above is not None and v <= p.above)
        ):
            bad = True
    if bad:
        raise FeatureConfigError(f"{where}: {key} must be {p.describe()}, got {value!r}")


#: libraries whose own builds decide the numbers, imported by modality (their module versions,
#: not a guessed distribution name: with two OpenCV wheels installed, the one imported counts)
_LIBS = {"video": ("cv2",), "audio": ("soundfile", "soxr")}


def _versions(modality: str | None = None) -> dict[str, str]:
    """Package versions, plus the builds of the libraries the ``modality`` decodes with
    (``None``: those of every modality that this process has already imported)."""
    import importlib
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "torchvision", "av", "librosa", "numpy", "onnxruntime", "h5py"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    if modality is None:
        names = [n for libs in _LIBS.values() for n in libs if n in sys.modules]
    else:
        names = list(_LIBS.get(modality, ()))
    for name in names:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        out[name] = str(getattr(mod, "__version__", "?"))
        if name == "cv2":
            out["cv2_build"] = _cv2_build(mod)
        if name == "soundfile":
            out["libsndfile"] = str(getattr(mod, "__libsndfile_version__", "?"))
    return out


@functools.cache
def _cv2_build(cv2: Any) -> str:
    """The wheel the imported ``cv2`` comes from (``opencv-python 5.0.0.93``) and its GUI backend."""
    import base64
    import hashlib
    import importlib.metadata as md
    from pathlib import Path

    # two OpenCV wheels share the cv2/ folder: the owner is the one whose recorded hash of the
    # compiled module matches the file on disk (the last one installed)
    owner, also = "unknown wheel", []
    for dist in (
        "opencv-python",
        "opencv-python-headless",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
    ):
        try:
            files = md.distribution(dist).files or []
        except md.PackageNotFoundError:
            continue
        also.append(dist)
        for f in files:
            if f.parts[0] == "cv2" and f.name.endswith(".so") and f.hash is not None:
                path = Path(str(f.locate()))
                digest = hashlib.sha256(path.read_bytes()).digest() if path.exists() else b""
                if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == f.hash.value:
                    owner = f"{dist} {md.version(dist)}"
                break
    others = [d for d in also if not owner.startswith(d + " ")]
    if others:
        owner += f" (also installed: {', '.join(others)})"
    gui = "?"
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip() or "NONE"
            break
    return f"{owner}, GUI {gui}"
