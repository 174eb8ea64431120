"""Run configs for stage two: YAML + defaults + dotted ``key.sub=value`` overrides.

One resolved dict drives a run and is written next to its outputs, so any result can be
reproduced from its run folder alone. Overrides are parsed with ``yaml.safe_load`` so
``trainer.max_epochs=5``, ``data.window.length=100`` or ``model.fusion=[a,b]`` get proper types.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from avemo.errors import UserError


class ConfigError(UserError, ValueError):
    """A run config that cannot be used; the message says which key and why."""


#: Every key a run reads, with its default. User configs are merged over this.
DEFAULTS: dict[str, Any] = {
    "name": None,  # run name (default: config file stem)
    "seed": 0,
    "data": {
        "manifest": None,
        "features": {},  # modality -> HDF5 path
        "expect": {},  # modality -> {provenance keys (feature_set/config/weights) or config_hash}
        "classes": None,  # clip tasks: class order (default: sorted labels of the manifest)
        "missing_clips": "error",  # manifest clip absent from a feature file: error | skip
        "non_ok": "skip",  # clips whose status is not ok: skip | keep (kept with zero mask)
        "dtype": "float32",  # device copy of the features: float32 | float16 (half the memory)
        "normalize": True,  # z-score with training-split statistics (masked rows excluded)
        "max_rows": None,  # clip tasks: cap rows per clip (uniform subsample), bounds memory
        "window": {"length": 300, "hop": 200},  # frame tasks
        "timeline": {"method": "nearest"},  # frame tasks: modality rows -> label times
        "targets": ["valence", "arousal"],  # frame tasks: annotation columns
        "batch_size": 32,
        "eval_batch_size": 256,
        "modality_dropout": 0.0,  # training: prob. of dropping one modality of a sample
        "eval_missing": [],  # evaluation: modalities treated as absent
    },
    "task": {"type": "clip"},  # clip | frame; n_out derived from classes / targets
    "split": {
        "method": "official",  # official | kfold | subjects
        "k": 5,
        "fold": 0,
        "val": "next_fold",  # kfold/subjects: next_fold | test (validate on the test fold)
        "pool": "all",  # kfold/subjects: all | trainval (official test clips stay out)
        "shuffle": False,  # shuffle sorted ids / subjects with the seed before assigning
        "use_manifest_folds": True,  # kfold: the manifest's fold column when it has one
    },
    "model": {"name": None},  # MODELS name + its kwargs
    "loss": {
        "name": None,  # cross_entropy (alias ce) | ccc | mse (default: cross_entropy / ccc)
        "label_smoothing": 0.0,
        "class_weights": None,  # null | balanced | [w_0, ..., w_C-1]
    },
    "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
    "schedule": {"name": "none"},  # none | plateau | cosine | jca_reference (+ their options)
    "trainer": {
        "max_epochs": 30,
        "accelerator": "auto",  # auto | cpu | gpu
        "deterministic": True,
        "fast_dev_run": False,
        "gradient_clip_val": None,
        "early_stopping": {"patience": 10},  # null disables
        "monitor": None,  # default: val/accuracy (clip) or val/ccc (frame)
        "limit_train_batches": None,
    },
    "eval": {"smooth": {}},  # frame tasks: target -> uniform filter width (frames)
    "output": {"dir": "runs", "plots": True, "verbose": True},  # verbose: one line per epoch
}


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings merge key by key (lists and scalars are replaced).

    A mapping that names another registered thing (``name`` differs) replaces the base's
    mapping instead: options of an FBP fusion must not leak into a concat fusion.
    """
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        prev = out.get(k)
        renamed = (isinstance(v, Mapping) and isinstance(prev, Mapping) and "name" in v
                   and "name" in prev and v["name"] != prev["name"])
        if isinstance(v, Mapping) and isinstance(prev, Mapping) and not renamed:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating levels as needed."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"bad override key {key!r}")
    node = cfg
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"override {key!r}: {p!r} is a {type(nxt).__name__}, not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. trainer.max_epochs=5)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    return key.strip(), value


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


def load_config(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Resolved run config: defaults <- base file(s) <- file (or dict) <- dotted overrides.

    A config may start with ``base: other.yaml`` (path relative to it) and state only what
    differs (a section naming another ``name`` replaces the base's section; a feature
    path ``null`` drops that modality); the resolved config in the run folder spells out all.
    """
    if isinstance(path_or_dict, Mapping):
        user = copy.deepcopy(dict(path_or_dict))
        source = None
        if user.get("base"):
            user = deep_merge(_read_file(Path(user.pop("base")), ()), user)
    else:
        source = Path(path_or_dict)
        user = _read_file(source, ())
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(user, key, value)
    cfg = deep_merge(DEFAULTS, _fix_floats(user))
    if cfg.get("name") is None:
        cfg["name"] = source.stem if source else "run"
    cfg["data"]["features"] = {m: p for m, p in (cfg["data"].get("features") or {}).items()
                               if p is not None}  # `face: null` drops a modality of a base
    cfg["_source"] = str(source) if source else None
    validate(cfg)
    return cfg


def _read_file(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A YAML config; ``base: other.yaml`` (relative to this file) is merged underneath."""
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
    if base:
        parent = _read_file(path.parent / str(base), (*seen, path.resolve()))
        parent.pop("name", None)  # a derived config is its own run
        user = deep_merge(parent, user)
    return user


def validate(cfg: Mapping[str, Any]) -> None:
    """Fail early, with the key named, on what would otherwise crash mid-run."""
    data, task = cfg["data"], cfg["task"]
    if not data.get("manifest"):
        raise ConfigError("data.manifest is required (path to a manifest CSV/Parquet)")
    if not isinstance(data.get("features"), Mapping) or not data["features"]:
        raise ConfigError("data.features must map modality names to feature files, e.g. "
                          "{face: features/afew/face_ir50.h5, audio: features/afew/logmel.h5}")
    if not cfg["model"].get("name"):
        raise ConfigError("model.name is required (see `avemo list models`)")
    if task.get("type") not in ("clip", "frame"):
        raise ConfigError(f"task.type must be clip or frame, got {task.get('type')!r}")
    choices = {
        "data.missing_clips": (data["missing_clips"], ("error", "skip")),
        "data.non_ok": (data["non_ok"], ("skip", "keep")),
        "split.method": (cfg["split"]["method"], ("official", "kfold", "subjects")),
        "split.val": (cfg["split"]["val"], ("next_fold", "test")),
        "split.pool": (cfg["split"]["pool"], ("all", "trainval")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
    unknown = [m for m in data.get("eval_missing") or [] if m not in data["features"]]
    if unknown:
        raise ConfigError(f"data.eval_missing names {unknown}, not in data.features {list(data['features'])}")
    if not 0.0 <= float(data.get("modality_dropout") or 0.0) < 1.0:
        raise ConfigError("data.modality_dropout must be in [0, 1)")
    w = data["window"]
    if int(w["length"]) < 1 or int(w["hop"]) < 1:
        raise ConfigError("data.window.length and data.window.hop must be positive")


def dump_config(cfg: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (plain types only, loadable with safe_load)."""
    path = Path(path)
    clean = {k: v for k, v in cfg.items() if not k.startswith("_")}
    path.write_text(yaml.safe_dump(_plain(clean), sort_keys=False))
    return path


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
