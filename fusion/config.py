"""Run configs for stage two: YAML + schema defaults + dotted ``key.sub=value`` overrides.

One resolved ``RunConfig`` drives a run and is written next to its outputs, so any result can
be reproduced from its run folder alone. Code reads its attributes (``cfg.data.batch_size``):
every default is written once, here, in the schema classes. Overrides are parsed with
``yaml.safe_load`` so ``trainer.max_epochs=5``, ``data.window.length=100`` or
``model.fusion=[a,b]`` get proper types.

The schema (``RunConfig``, pydantic) refuses unknown keys (with a "did you mean"), wrong
types and out-of-range values; the free-form sections (``model``, ``loss``, ``optim``,
``schedule``) are checked against the signatures of the registered constructors they name
(``check_registered``) -- all before any feature file is opened.

Path rule: a relative path written in a config file is relative to that file (each file of a
``base:`` chain for its own keys); a path given as an override, in a Python dict, or left at
its default is relative to the working directory. Resolved configs hold absolute paths.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from avemo.errors import UserError, did_you_mean
from avemo.fusion import registry as R
from avemo.schema import format_errors


class ConfigError(UserError, ValueError):
    """A run config that cannot be used; the message says which key and why."""


# ----------------------------------------------------------------------------- schema


class _Section(BaseModel):
    """A section of fixed keys: read by attribute (``cfg.data.batch_size``)."""

    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """A section whose extra keys are constructor arguments, checked by ``check_registered``."""

    model_config = ConfigDict(extra="allow")

    def options(self) -> dict[str, Any]:
        """The constructor's keyword arguments: every key but ``name``, extras included."""
        fields = {k: getattr(self, k) for k in type(self).model_fields if k != "name"}
        return {**fields, **(self.__pydantic_extra__ or {})}


class WindowConfig(_Section):
    length: int = Field(default=300, ge=1)
    hop: int = Field(default=200, ge=1)


class TimelineConfig(_Section):
    method: Literal["nearest", "linear", "mean"] = "nearest"
    max_gap: float | None = Field(default=None, gt=0)
    window: float | None = Field(default=None, gt=0)


class DataConfig(_Section):
    manifest: str
    features: dict[
        str, str | None
    ]  # modality -> HDF5 path, or a set name in features_dir (null drops it)
    features_dir: str | None = None  # where bare set names live (`avemo features -o` folder)
    expect: dict[str, dict[str, Any]] = {}  # modality -> provenance keys and/or config_hash
    classes: list[str] | None = None  # clip classification: class order (default: sorted labels)
    missing_clips: Literal["error", "skip"] = "error"
    non_ok: Literal["skip", "keep"] = "skip"  # keep: kept with their rows masked
    dtype: Literal["float32", "float16"] = "float32"
    normalize: bool = True  # z-score with training-split statistics
    # z-score per speaker first, its own clips: off/false, speaker/true, shrink (toward the pooled
    # statistics by clip count), auto (chosen on the training speakers) -- fusion.speaker_norm
    speaker_norm: bool | Literal["off", "speaker", "shrink", "auto"] = False
    # shrink: clips at which a speaker's own statistics weigh half
    speaker_norm_prior: float = Field(default=10.0, ge=0.0)
    speaker_norm_rule: Literal["1se", "best"] = (
        "1se"  # auto: simplest mode within 1 s.e. of the best, or the best
    )
    # streams used only when normalised per speaker (speaker / shrink); with off (or false) their
    # rows are masked: an un-normalised speaker embedding tells who speaks, not how
    # (fusion.speaker_norm); a name not in data.features is ignored (a dropped stream)
    speaker_norm_only: list[str] = []
    # the modes under which those streams are used: shrink leaves part of a speaker's own mean in
    # a speaker embedding (weight n / (n + prior)); [speaker] uses them only fully normalised
    speaker_norm_only_modes: list[Literal["shrink", "speaker"]] = Field(
        default=["shrink", "speaker"], min_length=1
    )
    # clip tasks: cap rows per clip (uniform subsample)
    max_rows: int | None = Field(default=None, ge=1)
    window: WindowConfig = WindowConfig()  # frame tasks
    timeline: TimelineConfig = TimelineConfig()  # frame tasks: modality rows -> label times
    targets: list[str] = ["valence", "arousal"]  # regression tasks: annotation / manifest columns
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=256, ge=1)
    # training: drop one modality of a sample
    modality_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    eval_missing: list[str] = []  # evaluation: modalities treated as absent

    @field_validator("targets")
    @classmethod
    def _some_targets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one target column")
        return v


class TaskConfig(_Section):
    type: str = "clip"  # a TASKS name: clip | frame | clip_regression


class SplitConfig(_Section):
    method: Literal["official", "kfold", "subjects"] = "official"
    k: int = Field(default=5, ge=2)
    fold: int = Field(default=0, ge=0)
    val: Literal["next_fold", "test"] = "next_fold"
    pool: Literal["all", "trainval"] = "all"
    shuffle: bool = False
    # the manifest's fold column: auto = used when it gives k folds, else folds made here
    use_manifest_folds: bool | Literal["auto"] = "auto"
    stratify: bool = True  # classification: folds keep each class's share (scikit-learn semantics)
    label_coverage: Literal["error", "warn"] = "error"  # val/test label absent from train


class ModelConfig(_Open):
    name: str


class LossConfig(_Open):
    name: str | None = None  # default: the task's loss
    class_weights: Literal["balanced"] | list[float] | None = None  # cross-entropy only


class OptimGroup(_Section):
    """Settings for the parameters under one module prefix (unset: the optimiser's own)."""

    lr: float | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)


class OptimConfig(_Open):
    name: str = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    # parameter-name prefix (a module of the model, e.g. branches.logmel_seq) -> its own lr /
    # weight decay: a CNN branch next to a strongly decayed linear head (fusion.optim.param_groups)
    groups: dict[str, OptimGroup] = {}

    def options(self) -> dict[str, Any]:
        """The optimiser constructor's keyword arguments (``groups`` is applied by the trainer)."""
        return {k: v for k, v in super().options().items() if k != "groups"}


class ScheduleConfig(_Open):
    name: str = "none"


class EarlyStoppingConfig(_Section):
    patience: int = Field(default=10, ge=1)
    min_delta: float = Field(default=0.0, ge=0)


class SwaConfig(_Section):
    """Weight averaging (SWA, Izmailov et al. 2018) over the tail of the run's own LR schedule."""

    start: float = Field(default=0.75, gt=0, le=1)  # fraction of max_epochs before averaging


class MixupConfig(_Section):
    """Mixup (Zhang et al. 2018) at the input of a named module (manifold mixup): clip rows of
    two recordings are not aligned in time, so the mix is of what a module sees per sample."""

    alpha: float = Field(default=0.4, gt=0)  # lambda ~ Beta(alpha, alpha)
    at: str = "head"  # the module whose input is mixed (a name from model.named_modules())


class TrainerConfig(_Section):
    max_epochs: int = Field(default=30, ge=1)
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    deterministic: bool = True
    fast_dev_run: bool = False
    gradient_clip_val: float | None = Field(default=None, gt=0)
    early_stopping: EarlyStoppingConfig | None = EarlyStoppingConfig()  # null disables
    monitor: str | None = None  # default: the task's monitor (val/accuracy, val/ccc)
    limit_train_batches: int | float | None = Field(default=None, gt=0)
    loggers: list[Literal["csv", "tensorboard", "mlflow"]] = ["csv"]
    progress: Literal["auto", "bar", "lines", "none"] = "auto"  # auto: bar on a terminal
    swa: SwaConfig | None = None  # final weights = the mean of the last epochs' weights
    mixup: MixupConfig | None = None  # training inputs of a module mixed pairwise, targets too


class EvalConfig(_Section):
    smooth: dict[str, int] = {}  # frame tasks: target -> uniform filter width (frames)
    clip_range: tuple[float, float] | None = None


class OutputConfig(_Section):
    dir: str = "runs"
    plots: bool = True
    verbose: bool = True  # one line per epoch when no progress bar is shown


class RunConfig(_Section):
    """Every key a run reads. ``avemo fuse-train -c X --print-config`` shows it resolved."""

    name: str | None = None  # run name (default: config file stem)
    seed: int = 0
    data: DataConfig
    task: TaskConfig = TaskConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    trainer: TrainerConfig = TrainerConfig()
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()
    _source: str | None = PrivateAttr(None)  # the config file it was read from (None: a dict)

    @property
    def source(self) -> str | None:
        """The config file this run config was read from (None: built from a dict)."""
        return self._source


#: Path-valued keys, as (section, key); ``None`` key = every value of the mapping.
PATH_KEYS: tuple[tuple[str, str | None], ...] = (
    ("data", "manifest"),
    ("data", "features_dir"),
    ("output", "dir"),
)
FEATURE_PATHS = ("data", "features")


def defaults() -> dict[str, Any]:
    """The schema's defaults (sections with required keys left out)."""
    out: dict[str, Any] = {}
    for name, f in RunConfig.model_fields.items():
        if f.is_required():
            continue
        v = f.get_default(call_default_factory=True)
        out[name] = v.model_dump() if isinstance(v, BaseModel) else v
    return out


# ----------------------------------------------------------------------------- merging


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings merge key by key (lists and scalars are replaced).

    A mapping that names another registered thing (``name`` differs) replaces the base's
    mapping instead: options of an FBP fusion must not leak into a concat fusion.
    """
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        prev = out.get(k)
        renamed = (
            isinstance(v, Mapping)
            and isinstance(prev, Mapping)
            and "name" in v
            and "name" in prev
            and v["name"] != prev["name"]
        )
        if isinstance(v, Mapping) and isinstance(prev, Mapping) and not renamed:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating levels as needed.

    Setting ``<section>.name`` to another name replaces the whole section (``{name: value}``),
    as a file naming another thing does: ``model.fusion.name=concat`` on an FBP config gives
    ``{name: concat}``, not FBP's options under a concat name.
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"bad override key {key!r}")
    node = cfg
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        elif isinstance(nxt, str) and parts[i + 1] != "name":  # `fusion: concat` + fusion.k=3
            nxt = node[p] = {"name": nxt}
        elif isinstance(nxt, str):
            nxt = node[p] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(
                f"override {key!r}: {'.'.join(parts[: i + 1])} is a "
                f"{type(nxt).__name__}, not a section"
            )
        node = nxt
    last = parts[-1]
    if last == "name" and len(parts) > 1 and "name" in node and node["name"] != value:
        node.clear()  # a named section (model.fusion, optim ...): another thing, other options
    node[last] = value  # the top-level ``name`` is the run's name: it renames, never replaces


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. trainer.max_epochs=5)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return key.strip(), value


def _override_order(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Section replacements first (a ``.name`` or a whole mapping, shallow before deep), then
    the rest in the given order: ``model.fusion.k=3 model.fusion.name=fbp`` keeps k."""

    def whole(kv: tuple[str, Any]) -> bool:
        return kv[0].endswith(".name") or isinstance(kv[1], Mapping)

    first = sorted((kv for kv in items if whole(kv)), key=lambda kv: kv[0].count("."))
    return first + [kv for kv in items if not whole(kv)]


_SCI = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _fix_floats(obj: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; every such value is meant as a float."""
    if isinstance(obj, dict):
        return {k: _fix_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fix_floats(v) for v in obj]
    if isinstance(obj, str) and _SCI.match(obj.strip()):
        return float(obj)
    return obj


# ----------------------------------------------------------------------------- paths


def _absolute(value: Any, root: Path) -> Any:
    if isinstance(value, str | os.PathLike) and str(value) and not Path(value).is_absolute():
        return os.path.normpath(os.path.join(os.path.abspath(root), os.fspath(value)))
    return str(value) if isinstance(value, os.PathLike) else value


def resolve_paths(cfg: dict[str, Any], root: str | os.PathLike[str]) -> dict[str, Any]:
    """Make the path keys of ``cfg`` (as far as present) absolute, relative to ``root``."""
    root = Path(root)
    for section, key in PATH_KEYS:
        sec = cfg.get(section)
        if isinstance(sec, dict) and key in sec:
            sec[key] = _absolute(sec[key], root)
    feats = (
        (cfg.get(FEATURE_PATHS[0]) or {}).get(FEATURE_PATHS[1])
        if isinstance(cfg.get(FEATURE_PATHS[0]), dict)
        else None
    )
    if isinstance(feats, dict):
        for m, p in feats.items():
            feats[m] = p if is_set_name(p) else _absolute(p, root)
    return cfg


def is_set_name(value: Any) -> bool:
    """A bare feature-set name (``logmel``), which ``data.features_dir`` turns into a file path."""
    return (
        isinstance(value, str)
        and bool(value)
        and "/" not in value
        and os.sep not in value
        and not value.endswith((".h5", ".hdf5"))
    )


def _expand_set_names(data: DataConfig) -> None:
    """``data.features.audio: logmel`` -> ``<data.features_dir>/logmel.h5``: a config names its
    sets once and a corpus is one override (``data.features_dir=features/ravdess``)."""
    named = {m: p for m, p in data.features.items() if is_set_name(p)}
    if named and not data.features_dir:
        m, p = next(iter(named.items()))
        raise ConfigError(
            f"data.features.{m}={p} names a feature set, not a file: set data.features_dir "
            "to the folder `avemo features -o` wrote (or give the .h5 path)"
        )
    for m, p in named.items():
        data.features[m] = os.path.join(str(data.features_dir), f"{p}.h5")


def absolute_override(key: str, value: Any, root: str | os.PathLike[str]) -> Any:
    """``value`` of a dotted override written in a file under ``root`` (a grid), with its
    relative paths made absolute: the same rule as in a config file."""
    parts = key.split(".")
    tmp: dict[str, Any] = {}
    node = tmp
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = copy.deepcopy(value)
    resolve_paths(tmp, Path(root))
    for p in parts:
        tmp = tmp[p]
    return tmp


# ----------------------------------------------------------------------------- loading


def load_config(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any] | RunConfig,
    overrides: Iterable[str] | None = None,
    *,
    check_args: bool = True,
) -> RunConfig:
    """Resolved, validated run config: schema defaults <- base file(s) <- file (or dict) <-
    dotted overrides. Raises ``ConfigError`` naming the key of the first mistake(s).

    A config may start with ``base: other.yaml`` (path relative to it) and state only what
    differs (a section naming another ``name`` replaces the base's section; a feature path
    ``null`` drops that modality); the resolved config in the run folder spells out all.
    A ``RunConfig`` given is resolved again as its dict (overrides on top of it).
    ``check_args=False`` skips the constructor-signature checks (no registry imports).
    """
    if isinstance(path_or_dict, RunConfig):
        path_or_dict = config_dict(path_or_dict)
    if isinstance(path_or_dict, Mapping):
        user = copy.deepcopy({k: v for k, v in path_or_dict.items() if not str(k).startswith("_")})
        source = None  # (a resolved config's private keys such as ``_source`` are dropped)
        if user.get("base"):
            base = Path(user.pop("base"))
            user = deep_merge(_read_file(base, ()), resolve_paths(user, Path.cwd()))
    else:
        source = Path(path_or_dict)
        user = _read_file(source, ())
    items = [parse_override(i) for i in overrides or []]
    for key, value in _override_order(items):
        set_dotted(user, key, value)
    user = resolve_paths(_fix_floats(user), Path.cwd())  # overrides / dict values: cwd
    data = user.get("data")
    if isinstance(data, dict) and isinstance(data.get("features"), dict):
        feats = data["features"]  # `face: null` drops a modality of a base
        data["features"] = {m: p for m, p in feats.items() if p is not None}
    cfg = validate_schema(user)
    _expand_set_names(cfg.data)
    if cfg.name is None:
        cfg.name = source.stem if source else "run"
    cfg.output.dir = _absolute(cfg.output.dir, Path.cwd())
    validate(cfg)
    if check_args:
        check_registered(cfg)
    cfg._source = str(source) if source else None
    return cfg


def run_config(cfg: RunConfig | Mapping[str, Any]) -> RunConfig:
    """``cfg`` as a ``RunConfig``: itself, or a dict (a Python caller's) resolved and validated
    by ``load_config`` -- the entry of every function that takes a config."""
    return cfg if isinstance(cfg, RunConfig) else load_config(cfg)


def config_dict(cfg: BaseModel) -> dict[str, Any]:
    """Serialisation: a config (or one of its sections) as plain data, the form bytes on disk
    are made of (``config.yaml``, stack keys); a ``RunConfig`` keeps ``_source``. Code reads
    attributes, never this dict."""
    out = _plain(cfg.model_dump())
    if isinstance(cfg, RunConfig):
        out["_source"] = cfg.source
    return out


def _read_file(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A YAML config with its paths made absolute; ``base:`` (relative to it) merged underneath."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"config {path}: circular base chain {[str(p) for p in seen]}")
    try:
        user = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(user, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(user).__name__}")
    base = user.pop("base", None)
    user = resolve_paths(user, path.parent)
    if base:
        parent = _read_file(path.parent / str(base), (*seen, path.resolve()))
        parent.pop("name", None)  # a derived config is its own run
        user = deep_merge(parent, user)
    return user


def validate_schema(user: Mapping[str, Any]) -> RunConfig:
    """Defaults filled in, types coerced (``"5"`` -> 5), mistakes as one ``ConfigError``."""
    return section(RunConfig, user)


_M = TypeVar("_M", bound=BaseModel)


def section(model: type[_M], value: _M | Mapping[str, Any], where: str = "") -> _M:
    """``value`` as the schema class ``model`` (given one: itself), mistakes as one
    ``ConfigError`` whose keys start with ``where`` (``split`` -> ``split.k: ...``)."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise ConfigError(format_errors(e, model, prefix=f"{where}." if where else "")) from None


def validate(cfg: RunConfig) -> None:
    """Checks across keys that the per-key schema cannot express."""
    data = cfg.data
    if not data.features:
        raise ConfigError(
            "data.features must map modality names to feature files, e.g. "
            "{face: features/afew/face_ir50.h5, audio: features/afew/logmel.h5}"
        )
    import importlib.util

    for name in cfg.trainer.loggers:
        module = {"tensorboard": "tensorboard", "mlflow": "mlflow"}.get(name)
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"trainer.loggers: {name} is not installed (`pip install {module}`), "
                "or leave it out (csv is the default)"
            )
    tc = cfg.trainer
    if tc.swa is not None and tc.early_stopping is not None:
        raise ConfigError(
            "trainer.swa averages the last epochs of a fixed budget, and early stopping may end "
            "the run before them: set trainer.early_stopping=null (or drop trainer.swa)"
        )
    unknown = [m for m in data.eval_missing if m not in data.features]
    if unknown:
        raise ConfigError(
            f"data.eval_missing names {unknown}, not in data.features {list(data.features)}"
        )


# ----------------------------------------------------------------------------- constructor args


#: Option names whose values are probabilities / fractions: must lie in [0, 1].
_PROBABILITY = re.compile(r"(^|_)dropout$|^label_smoothing$|^p$|_prob$")


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an unresolvable annotation is simply not checked
        return {}


def _check_value(
    fn: Callable[..., Any], hints: Mapping[str, Any], key: str, value: Any, where: str
) -> None:
    """The value of option ``key`` against its annotation (pydantic, lax) and, for probability
    options, the range [0, 1]."""
    from pydantic import TypeAdapter

    if _PROBABILITY.search(key) and isinstance(value, int | float) and not isinstance(value, bool):
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"{where}.{key}: must be in [0, 1], got {value!r}")
    hint = hints.get(key)
    if hint is None or value is None:
        return
    try:
        adapter = TypeAdapter(hint)
    except Exception:  # noqa: BLE001 - e.g. an arbitrary class: not checkable, leave it to the constructor
        return
    try:
        adapter.validate_python(value)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        msg = err["msg"][0].lower() + err["msg"][1:]
        raise ConfigError(f"{where}.{key}: {msg}, got {value!r}") from None


def check_kwargs(
    fn: Callable[..., Any],
    given: Mapping[str, Any] | Iterable[str],
    where: str,
    injected: Iterable[str] = (),
) -> None:
    """Every key of ``given`` must be a named parameter of ``fn`` (``injected`` ones are the
    trainer's to pass, not the config's), and every value must fit the parameter's annotation
    (probabilities: [0, 1]). ``**kwargs`` alone accepts nothing extra: options must be spelled
    out in the signature to be settable from a config."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    inj = set(injected)
    named = [
        n
        for n, p in sig.parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in inj and n != "self"
    ]
    for k in given:
        if k in inj:
            raise ConfigError(f"{where}.{k} is set by the trainer, not by the config")
        if k not in named:
            raise ConfigError(
                f"{where}.{k}: unknown option{did_you_mean(k, named)} "
                f"(options: {', '.join(named) or 'none'})"
            )
    if isinstance(given, Mapping):
        hints = _hints(fn)
        for k, v in given.items():
            _check_value(fn, hints, k, v, where)


def _get(registry: Any, name: Any, key: str) -> Any:
    if not isinstance(name, str):
        raise ConfigError(f"{key} must be a name (see `avemo list`), got {name!r}")
    if name not in registry:
        raise ConfigError(
            f"{key}: unknown {registry.kind} {name!r}"
            f"{did_you_mean(name, registry.names())} (known: "
            f"{', '.join(registry.names())})"
        )
    return registry.get(name)


def _first_param(fn: Any) -> set[str]:
    """The input size a sub-module is built with (row_shape / in_dim / dims): the model's."""
    params = [
        n
        for n, p in inspect.signature(fn).parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return set(params[:1])


def _check_sub(registry: Any, value: Any, default: Any, where: str) -> None:
    """A sub-module option: a name, ``{name, **options}``, or ``{per_modality: {m: ...}}``."""
    if value is None:
        return
    if isinstance(value, str):
        _get(registry, value, where)
        return
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a name or a mapping with `name`, got {value!r}")
    base = {k: v for k, v in value.items() if k != "per_modality"}
    variants = [(where, base)]
    for m, over in (value.get("per_modality") or {}).items():
        merged = {**base, "name": over} if isinstance(over, str) else {**base, **(over or {})}
        if isinstance(over, Mapping) and "name" in over and over["name"] != base.get("name"):
            merged = dict(over)
        variants.append((f"{where}.per_modality.{m}", merged))
    for key, v in variants:
        # the sub-module named, else the constructor's own default (a signature, not the schema)
        name = v["name"] if "name" in v else (default if isinstance(default, str) else None)
        if name is None:
            continue
        cls = _get(registry, name, f"{key}.name" if "name" in v else key)
        check_kwargs(cls, {k: x for k, x in v.items() if k != "name"}, key, _first_param(cls))


def check_registered(cfg: RunConfig | Mapping[str, Any]) -> None:
    """Names and options of ``task``, ``model`` (and its fusion / temporal / encoder / head
    sub-sections), ``loss``, ``optim`` and ``schedule`` against the registered constructors."""
    if not isinstance(cfg, RunConfig):  # these sections alone (a plugin's test): each validated
        parts: dict[str, type[BaseModel]] = {
            "task": TaskConfig,
            "loss": LossConfig,
            "optim": OptimConfig,
            "schedule": ScheduleConfig,
        }
        raw = cfg
        given = {n: section(m, raw[n], n) for n, m in parts.items() if n in raw}
        model = section(ModelConfig, raw["model"] if "model" in raw else {}, "model")
        cfg = RunConfig.model_construct(model=model, **given)
    R.load_all()
    task_cls = _get(R.TASKS, cfg.task.type, "task.type")
    model_cls = _get(R.MODELS, cfg.model.name, "model.name")
    kwargs = cfg.model.options()
    check_kwargs(model_cls, kwargs, "model", ("inputs", "task"))
    params = inspect.signature(model_cls).parameters
    for k, v in kwargs.items():
        sub = R.SUBMODULE_REGISTRIES.get(k) or (R.ENCODERS if k.endswith("encoder") else None)
        if sub is not None:
            _check_sub(sub, v, params[k].default, f"model.{k}")
        elif k == "head" and isinstance(v, Mapping):
            from avemo.fusion.models.base import Head

            check_kwargs(Head, v, "model.head", ("in_dim", "n_out"))
    name = cfg.loss.name or task_cls.default_loss
    loss_cls = _get(R.LOSSES, R.LOSS_ALIASES.get(name, name), "loss.name")
    if (
        cfg.loss.class_weights is not None
        and "class_weights" not in inspect.signature(loss_cls).parameters
    ):
        raise ConfigError(f"loss.class_weights is for cross_entropy, not loss {name!r}")
    lc = {k: v for k, v in cfg.loss.options().items() if k != "class_weights"}
    check_kwargs(loss_cls, lc, "loss")
    opt = _get(R.OPTIMIZERS, cfg.optim.name, "optim.name")
    check_kwargs(opt, cfg.optim.options(), "optim", ("params",))
    sch = _get(R.SCHEDULES, cfg.schedule.name, "schedule.name")
    check_kwargs(sch, cfg.schedule.options(), "schedule", R.SCHEDULE_INJECTED)


# ----------------------------------------------------------------------------- output


def dump_config(cfg: RunConfig | Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (plain types only, loadable with safe_load)."""
    path = Path(path)
    path.write_text(config_yaml(cfg))
    return path


def config_yaml(cfg: RunConfig | Mapping[str, Any]) -> str:
    """The resolved config as YAML text (what ``--print-config`` shows)."""
    plain = config_dict(cfg) if isinstance(cfg, RunConfig) else cfg
    clean = {k: v for k, v in plain.items() if not k.startswith("_")}
    return yaml.safe_dump(_plain(clean), sort_keys=False)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj
