"""The contract between the extraction runner and every feature set."""

from __future__ import annotations

import functools
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Optional, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
)
from pydantic_core import PydanticCustomError

from avemo.data.registry import RegisteredName
from avemo.data.store import ClipFeatures, make_provenance
from avemo.errors import FeatureConfigError
from avemo.extract.registry import FEATURE_SETS
from avemo.schema import format_errors


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


#: Words for the kinds a key accepts, in the messages of several-kind keys.
_KIND_WORDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def _kind(default: Any) -> type | None:
    """The kind a key's default implies (None: any value)."""
    for t in (bool, int, float, str):
        if type(default) is t:
            return t
    if isinstance(default, list | tuple):
        return list
    if isinstance(default, Mapping):
        return dict
    return None


def _as_list(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v  # YAML gives lists; Python callers tuples too


def _is_mapping(v: Any) -> Any:
    if not isinstance(v, Mapping):
        raise PydanticCustomError("mapping_type", "input should be a mapping")
    return v  # as given: a mapping config (e.g. crop) is hashed as written


#: pydantic types per kind: strict (a bool is not an int, "5" is not a number), floats stored
#: as float (25 and 25.0 hash the same), lists of any items (tuples become lists).
_TYPES: dict[type, Any] = {
    bool: StrictBool,
    int: StrictInt,
    float: StrictFloat,
    str: StrictStr,
    list: Annotated[list[Any], Strict(), BeforeValidator(_as_list)],
    dict: Annotated[Any, AfterValidator(_is_mapping)],
}


def _one_of(kinds: tuple[type, ...]) -> Any:
    """The first kind that accepts the value (left to right), with one message if none does."""
    words = " or ".join(_KIND_WORDS[k] for k in kinds)

    def check(v: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(v)
        except ValidationError:
            raise PydanticCustomError("kind", f"input should be {words}") from None

    union: Any = Union.__getitem__(tuple(_TYPES[k] for k in kinds))  # built at run time
    return Annotated[union, Field(union_mode="left_to_right"), WrapValidator(check)]


def _range_check(p: Param) -> Callable[[Any], Any]:
    """``Param``'s choices / bounds / length as a pydantic after-validator (its own words)."""

    def check(value: Any) -> Any:
        if p.length is not None and isinstance(value, list) and len(value) != p.length:
            raise PydanticCustomError("length", f"must have {p.length} items")
        bounded = (p.min, p.max, p.above) != (None, None, None)
        bad = p.choices is not None and value not in p.choices
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, bool) or not isinstance(v, int | float):
                if bounded:
                    raise PydanticCustomError("numbers", "must hold numbers")
                continue
            if (
                (p.min is not None and v < p.min)
                or (p.max is not None and v > p.max)
                or (p.above is not None and v <= p.above)
            ):
                bad = True
        if bad:
            raise PydanticCustomError("range", f"must be {p.describe()}")
        return value

    return check


def _field(default: Any, p: Param) -> Any:
    """The pydantic annotation of one key: its kinds (from ``Param.types`` or the default),
    None where the default is None or the key is nullable, then the ``Param`` checks."""
    implied = _kind(default)
    kinds: tuple[type, ...] = p.types or ((implied,) if implied else ())
    if (
        kinds == (list,)
        and default
        and all(isinstance(d, int | float) and not isinstance(d, bool) for d in default)
    ):
        kinds = (list, float)  # e.g. detector thresholds: a list, or one value
    ann: Any = Any if not kinds else _TYPES[kinds[0]] if len(kinds) == 1 else _one_of(kinds)
    ann = Annotated[ann, AfterValidator(_range_check(p))]
    if kinds and (default is None or p.nullable):
        ann = Optional[ann]  # noqa: UP045 - built at run time
    elif not kinds and (default is None or p.nullable):
        ann = Annotated[ann, WrapValidator(lambda v, h: None if v is None else h(v))]
    return ann


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
    _config_model: ClassVar[type[BaseModel] | None] = None  # config_model's, per class

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
    def config_model(cls) -> type[BaseModel]:
        """The pydantic model of this set's config (built once per class): one field per
        ``default_config`` key (aliased: a key may be any name), unknown keys refused."""
        model = cls.__dict__.get("_config_model")
        if model is None:
            params = cls.params()
            fields: dict[str, Any] = {
                f"k{i}": (_field(d, params.get(k, Param())), Field(d, alias=k))
                for i, (k, d) in enumerate(cls.default_config.items())
            }
            model = create_model(
                f"{cls.__name__}Config",
                __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                **fields,
            )
            cls._config_model = model
        return model

    @classmethod
    def check_config(cls, config: Mapping[str, Any] | None) -> dict[str, Any]:
        """The full config (defaults + ``config``), or one FeatureConfigError naming the bad keys.

        Every key must be known; its value must have the kind of its default (None defaults
        take anything unless a ``Param`` says otherwise) and satisfy its ``Param``. Validated by
        ``config_model`` (pydantic); messages in the one form of ``avemo.schema``.
        """
        where = f"feature set {cls.name}"
        if config is not None and not isinstance(config, Mapping):
            raise FeatureConfigError(
                f"{where}: config must be a mapping of key: value, got {config!r}"
            )
        config = dict(config or {})
        model = cls.config_model()
        try:
            checked = model.model_validate(config)
        except ValidationError as e:
            raise FeatureConfigError(f"{where}: {format_errors(e, model, by_alias=True)}") from None
        out = dict(cls.default_config)  # defaults as declared (hashed as they are written)
        by_key = {f.alias: n for n, f in type(checked).model_fields.items()}
        for key in config:
            out[key] = getattr(checked, by_key[key])
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
