"""Typed configs end to end (issue 22.1): the code receives a ``RunConfig`` and reads its
attributes; every default is written once, in the schema classes of ``fusion/config.py``.

The references here are the schema's own declarations (``model_fields``) and the source text
of the package (an AST scan), never values copied from a run.
"""

from __future__ import annotations

import ast
import os
import typing
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import BaseModel

from avemo.fusion.config import (
    ConfigError,
    RunConfig,
    SplitConfig,
    config_dict,
    config_yaml,
    dump_config,
    load_config,
    run_config,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "workflows" / "configs"

#: Files that read the config by attribute only (no ``cfg["section"]`` / ``.get("section")``).
MIGRATED = (
    "fusion/callbacks.py",
    "fusion/config.py",
    "fusion/datamodule.py",
    "fusion/ensemble.py",
    "fusion/evaluate.py",
    "fusion/features.py",
    "fusion/grid_trainer.py",
    "fusion/index.py",
    "fusion/losses.py",
    "fusion/metrics.py",
    "fusion/module.py",
    "fusion/optim.py",
    "fusion/predict.py",
    "fusion/registry.py",
    "fusion/run.py",
    "fusion/speaker_norm.py",
    "fusion/splits.py",
    "fusion/stacked.py",
    "fusion/tasks/base.py",
    "fusion/tasks/clip_classification.py",
    "fusion/tasks/clip_regression.py",
    "fusion/tasks/frame_regression.py",
    "fusion/train/__init__.py",
    "fusion/train/__main__.py",
    "workflows/ablation/checks.py",
    "workflows/ablation/folds.py",
    "workflows/ablation/spec.py",
    "workflows/ablation/stacking.py",
    "workflows/crossval.py",
    "workflows/demo.py",
    "workflows/merge.py",
    "workflows/predict.py",
    "workflows/report.py",
)
SCANNED = ("fusion", "workflows", "bench")


def _minimal() -> dict:
    return {
        "data": {"manifest": "m.csv", "features": {"audio": "a.h5"}},
        "model": {"name": "unimodal"},
    }


def _sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """Every schema class under ``model`` with its dotted place (``""``, ``data``, ``data.window``)."""
    yield prefix, model
    for name, f in model.model_fields.items():
        if typing.get_origin(f.annotation) in (dict, list):  # values of a mapping: no defaults
            continue  # to read through (optim.groups is {} unless given)
        for a in (f.annotation, *getattr(f.annotation, "__args__", ())):
            if isinstance(a, type) and issubclass(a, BaseModel):
                yield from _sections(a, f"{prefix}{name}.")


SCHEMA_KEYS = frozenset(k for _, m in _sections(RunConfig) for k in m.model_fields)


def _off_by_default(place: str) -> bool:
    """A section under ``place`` that is ``None`` unless given (trainer.swa, trainer.mixup: their
    keys' defaults are read in test_fusion_mixup_swa once the section is switched on)."""
    model: type[BaseModel] = RunConfig
    for part in filter(None, place.split(".")):
        f = model.model_fields[part]
        if f.default is None:
            return True
        model = next(
            a
            for a in (f.annotation, *getattr(f.annotation, "__args__", ()))
            if isinstance(a, type) and issubclass(a, BaseModel)
        )
    return False


def _defaulted() -> list[tuple[str, str]]:
    """(section, key) of every schema key with a default, sections reached through defaults."""
    out = []
    for place, model in _sections(RunConfig):
        if _off_by_default(place):
            continue
        for key, f in model.model_fields.items():
            if not f.is_required() and not (
                isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
            ):
                out.append((place.rstrip("."), key))
    return out


@pytest.mark.parametrize("place, key", _defaulted())
def test_an_attribute_read_gives_the_schema_default(place, key, tmp_path, monkeypatch):
    """A config that leaves ``key`` out reads the default its schema class declares."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_minimal(), check_args=False)
    assert isinstance(cfg, RunConfig)
    node: BaseModel = cfg
    for part in filter(None, place.split(".")):
        node = getattr(node, part)
    model = type(node)
    want = model.model_fields[key].get_default(call_default_factory=True)
    got = getattr(node, key)
    if (place, key) == ("output", "dir"):  # a path: resolved against the working directory
        want = os.path.abspath(want)
    if (place, key) == ("", "name"):  # a dict config's run name (a file's: its stem)
        want = "run"
    assert got == want, f"{place}.{key}"


def test_every_function_taking_a_config_takes_a_python_dict_too(tmp_path, monkeypatch):
    """A dict becomes the same validated ``RunConfig`` ``load_config`` gives."""
    from avemo.fusion.stacked import stack_key, why_not_stackable

    monkeypatch.chdir(tmp_path)
    d = {**_minimal(), "trainer": {"fast_dev_run": True}}
    cfg = run_config(d)
    assert isinstance(cfg, RunConfig) and run_config(cfg) is cfg
    assert config_yaml(cfg) == config_yaml(load_config(d))
    assert stack_key(d) == stack_key(cfg)
    assert "fast_dev_run" in (why_not_stackable(d) or "")
    with pytest.raises(ConfigError, match="trainer.max_epoch: unknown key, did you mean"):
        run_config({**_minimal(), "trainer": {"max_epoch": 3}})


def test_a_split_section_given_as_a_dict_gets_the_schema_defaults():
    from avemo.fusion.splits import make_splits

    df = pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(12)],
            "subject": [f"s{i % 6}" for i in range(12)],
        }
    )
    sp = make_splits(df, {"method": "kfold"})
    schema = SplitConfig()
    assert (sp["k"], sp["fold"], sp["val"]) == (schema.k, schema.fold, schema.val)
    with pytest.raises(ConfigError, match=r"^split\.kk: unknown key, did you mean k\?"):
        make_splits(df, {"method": "kfold", "kk": 3})


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_a_written_config_reloads_to_the_same_bytes(path, tmp_path):
    """What ``Run.from_dir`` reads back is what was written: dump -> load -> dump is stable,
    and the YAML is the config's dict (plain types, schema order, no private keys)."""
    cfg = load_config(path, check_args=False)
    written = dump_config(cfg, tmp_path / "config.yaml").read_text()
    again = load_config(tmp_path / "config.yaml", check_args=False)
    assert config_yaml(again) == written
    plain = config_dict(cfg)
    assert plain.pop("_source") == str(path)
    assert yaml.safe_load(written) == plain
    assert list(yaml.safe_load(written)) == list(RunConfig.model_fields)


def test_a_config_is_read_by_attribute_only():
    """No dict reads on a config (the transitional ones of issue 22 are gone); a section's
    ``options()`` is its serialised form without ``name``, extra constructor keys included
    (``optim.groups`` excepted: the trainer applies it, the optimiser never sees it)."""
    cfg = load_config(CONFIGS / "zhou_self_fbp.yaml")
    assert cfg.source == str(CONFIGS / "zhou_self_fbp.yaml")
    for read in (lambda: cfg["data"], lambda: cfg.data["batch_size"], lambda: cfg.trainer.get):
        with pytest.raises((TypeError, AttributeError)):
            read()
    assert cfg.model.options()["fusion"] == cfg.model.fusion  # a constructor option (extra key)
    skip = ("name", "groups")
    assert cfg.optim.options() == {k: v for k, v in config_dict(cfg.optim).items() if k not in skip}


# ----------------------------------------------------------------------------- source scan

_LITERALS = (ast.Constant, ast.List, ast.Dict, ast.Tuple, ast.Set)


def _get_key(node: ast.AST) -> str | None:
    """``x.get("<schema key>", ...)``'s key, or None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value in SCHEMA_KEYS
    ):
        return str(node.args[0].value)
    return None


def _not_none(node: ast.AST) -> bool:
    return not (isinstance(node, ast.Constant) and node.value is None)


def restated_defaults(source: str) -> list[tuple[int, str]]:
    """(line, key) of each ``.get("<schema key>", <default>)`` and ``.get("<schema key>") or
    <literal>``: a default written again outside the schema."""
    out = []
    for node in ast.walk(ast.parse(source)):
        key = _get_key(node)
        if key and isinstance(node, ast.Call) and len(node.args) > 1 and _not_none(node.args[1]):
            out.append((node.lineno, key))
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            for i, v in enumerate(node.values):
                key = _get_key(v)
                rest = node.values[i + 1 :]
                if key and any(isinstance(w, _LITERALS) and _not_none(w) for w in rest):
                    out.append((node.lineno, key))
    return sorted(out)


def test_the_scan_finds_each_form_of_a_restated_default():
    src = (
        'a = cfg["data"].get("speaker_norm", False)\n'
        'b = int(cfg.get("seed") or 0)\n'
        'c = int(n or cfg["data"].get("eval_batch_size") or 256)\n'
        'd = (cfg.get("eval") or {}).get("clip_range")\n'
        'e = record.get("prior", 10.0)\n'  # not a schema key
        'f = cfg.get("seed")\n'  # no default restated
        "g = cfg.data.speaker_norm\n"
    )
    assert restated_defaults(src) == [
        (1, "speaker_norm"),
        (2, "seed"),
        (3, "eval_batch_size"),
        (4, "eval"),
    ]


def test_no_default_is_restated_outside_the_schema():
    found = {}
    for root in SCANNED:
        for p in sorted((REPO / root).rglob("*.py")):
            rel = p.relative_to(REPO).as_posix()
            hits = restated_defaults(p.read_text())
            if hits:
                found[rel] = hits
    assert not found, (
        f"schema defaults restated outside fusion/config.py: {found}; read the attribute "
        "(cfg.data.speaker_norm) instead"
    )


_SECTIONS = frozenset(RunConfig.model_fields)


def _dict_reads(source: str) -> list[tuple[int, str]]:
    """``<...cfg...>["<section>"]`` and ``<...cfg...>.get("<section>")`` reads of a run config."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            target, key = node.func.value, node.args[0]
        else:
            continue
        name = ast.unparse(target)
        if isinstance(key, ast.Constant) and key.value in _SECTIONS and "cfg" in name.lower():
            out.append((node.lineno, f"{name}[{key.value!r}]"))
    return out


@pytest.mark.parametrize("rel", MIGRATED)
def test_migrated_modules_read_the_config_by_attribute(rel):
    assert _dict_reads((REPO / rel).read_text()) == []
