"""A grid file: its schema, and the cells it expands to.

The YAML is validated by ``GridSpec`` (pydantic) with the run configs' error form -- ``key:
reason, got value``, "did you mean" for an unknown key -- then turned into a ``Grid``: named
axes of override bundles whose product are the cells. Relative paths written in a grid file
(``base``, ``out_dir``, path-valued overrides) are relative to that file; in a dict, to the
working directory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from avemo.fusion.config import RunConfig, absolute_override, load_config, parse_override
from avemo.schema import format_errors
from avemo.workflows.ablation.errors import GridError
from avemo.workflows.ablation.folds import CVSpec, fold_values

DEFAULT_REPLICATES = ("seed", "fold")
#: ``stack:`` values (auto: stack on a GPU only)
STACK_MODES = ("auto", "on", "off")
StackMode = Literal["auto", "on", "off"]


# ----------------------------------------------------------------------------- schema

_AXIS_FORMS = (
    "must be a list (axis name = dotted key), {key, values}, or a mapping label -> "
    "{dotted.key: value}"
)


def _axis_form(spec: Any) -> Any:
    """One axis in one of its three forms (checked here so the error names ``axes.<name>``)."""
    if isinstance(spec, list):
        return spec
    if isinstance(spec, Mapping) and "key" in spec and "values" in spec:
        extra = sorted(set(spec) - {"key", "values"})
        if extra:
            raise ValueError(f"{{key, values}} takes no other keys ({', '.join(extra)})")
        if not isinstance(spec["key"], str) or not isinstance(spec["values"], list):
            raise ValueError("{key, values} needs a dotted key and a list of values")
        return spec
    if isinstance(spec, Mapping) and spec:
        for lab, bundle in spec.items():
            if not isinstance(bundle, Mapping):
                raise ValueError(f"value {lab!r}: a bundle must map dotted keys to values")
        return spec
    raise ValueError(_AXIS_FORMS)


def _stack_mode(v: Any) -> Any:
    """YAML 1.1 reads a bare ``on``/``off`` as a boolean: both spellings mean the mode."""
    if isinstance(v, bool):
        return "on" if v else "off"
    return v.lower() if isinstance(v, str) else v


def _none_if_empty(v: Any) -> Any:
    return v or None


def _either(what: str) -> WrapValidator:
    """A union's mistake as one reason (``must be what``), not one error per member type."""

    def check(v: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(v)
        except ValidationError:
            raise ValueError(f"must be {what}") from None

    return WrapValidator(check)


class GridSpec(BaseModel):
    """Every key a grid file may hold (``definitions``: free space for YAML anchors)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None  # default: the grid file's stem
    # run config path (relative to the grid file) or mapping
    base: Annotated[str | dict[str, Any], _either("a run config path or a mapping")]
    out_dir: str | None = None  # default: runs/ablate/<name> in the working directory
    overrides: Annotated[  # applied to every cell
        list[str] | dict[str, Any] | None,
        _either("a list of KEY=VALUE strings or a mapping dotted.key -> value"),
    ] = None
    axes: dict[str, Annotated[Any, AfterValidator(_axis_form)]] | None = None
    cv: Annotated[CVSpec | None, BeforeValidator(_none_if_empty)] = None  # adds a ``fold`` axis
    train_fn: str | None = None  # module:function with train_from_config's signature
    workers: int | None = Field(None, ge=1)  # local processes sharing the cells
    replicates: list[str] | None = None  # aggregated over (default: seed and fold)
    on_missing: Literal["skip", "error"] = "skip"  # cells lacking features
    report: dict[str, Any] | None = None  # write_report options
    labels: dict[str, dict[str, Any] | None] | None = None  # axis -> value -> description
    definitions: Any = None
    stack: Annotated[StackMode, BeforeValidator(_stack_mode)] = "auto"


#: Top-level keys of a grid YAML.
GRID_KEYS = tuple(GridSpec.model_fields)


def validate_grid(spec: Any) -> GridSpec:
    """The grid mapping checked against ``GridSpec``; mistakes as one ``GridError``."""
    if not isinstance(spec, Mapping):
        raise GridError(f"a grid must be a mapping of {', '.join(GRID_KEYS)}, got {spec!r}")
    try:
        return GridSpec.model_validate(dict(spec))
    except ValidationError as e:
        raise GridError(format_errors(e, GridSpec)) from None


# ----------------------------------------------------------------------------- grid and cells


@dataclass
class Axis:
    name: str
    values: list[tuple[str, dict[str, Any]]]  # (label, {dotted key: value})


@dataclass
class Cell:
    cell_id: str
    labels: dict[str, str]
    overrides: dict[str, Any]
    config_id: str  # labels without the replicate axes: what the aggregate groups by

    def override_args(self, common: Sequence[str] = ()) -> list[str]:
        """``key=value`` strings for ``load_config`` (values as JSON, which is valid YAML)."""
        return [*common, *(f"{k}={json.dumps(v)}" for k, v in self.overrides.items())]


@dataclass
class Grid:
    name: str
    base: str | dict[str, Any]
    axes: list[Axis]
    overrides: list[str] = field(default_factory=list)
    out_dir: Path = Path("runs/ablate")
    replicates: tuple[str, ...] = DEFAULT_REPLICATES
    on_missing: str = "skip"
    report: dict[str, Any] = field(default_factory=dict)
    cv: dict[str, Any] | None = None
    train_fn: str | None = None  # "module:function" with train_from_config's signature
    workers: int = 1  # local processes sharing the cells (RANK/WORLD_SIZE sharding)
    stack: str = "auto"  # auto: stacked on a GPU; on: stacked anywhere; off: one by one
    source: Path | None = None
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # axis -> value -> description

    def cells(self) -> list[Cell]:
        out = []
        for combo in itertools.product(*(a.values for a in self.axes)):
            labels = {a.name: lab for a, (lab, _) in zip(self.axes, combo, strict=True)}
            over: dict[str, Any] = {}
            owner: dict[str, str] = {}
            for a, (_, o) in zip(self.axes, combo, strict=True):
                for k, v in o.items():
                    if k in over and over[k] != v:
                        raise GridError(
                            f"axes {owner[k]!r} and {a.name!r} both set {k} "
                            f"({over[k]!r} vs {v!r}) in one cell; make one axis own it"
                        )
                    over[k], owner[k] = v, a.name
            cid = cell_id(labels)
            conf = {k: v for k, v in labels.items() if k not in self.replicates}
            out.append(Cell(cid, labels, over, cell_id(conf) or "all"))
        return out


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-") or "x"


def cell_id(labels: Mapping[str, str]) -> str:
    """The folder name of a cell: ``axis=label`` pairs, hashed beyond 150 characters."""
    cid = "__".join(f"{_safe(k)}={_safe(v)}" for k, v in labels.items())
    if len(cid) > 150:  # keep folder names short; the labels are in DONE.json anyway
        cid = cid[:130] + "__" + hashlib.sha1(cid.encode()).hexdigest()[:10]
    return cid


def _label(v: Any) -> str:
    return json.dumps(v) if isinstance(v, list | dict) else str(v)


def _absolute_arg(item: str, root: Path) -> str:
    """A ``key=value`` override written in a grid file, its paths relative to that file."""
    key, value = parse_override(item)
    return f"{key}={json.dumps(absolute_override(key, value, root))}"


def _axis(name: str, spec: Any, root: Path) -> Axis:
    """A validated axis spec (``_axis_form``) as (label, bundle) values, paths made absolute."""

    def ab(key: str, v: Any) -> Any:
        return absolute_override(key, v, root)

    if isinstance(spec, list):
        return Axis(name, [(_label(v), {name: ab(name, v)}) for v in spec])
    if "key" in spec and "values" in spec:
        return Axis(name, [(_label(v), {spec["key"]: ab(spec["key"], v)}) for v in spec["values"]])
    return Axis(name, [(str(lab), {k: ab(k, v) for k, v in b.items()}) for lab, b in spec.items()])


def fold_axis(cv: Mapping[str, Any] | CVSpec) -> Axis:
    """The grid axis ``fold`` with one value per fold of the cross-validation ``cv``."""
    return Axis("fold", fold_values(cv))


def read_grid_file(src: Path) -> Any:
    """The YAML of a grid file (not yet validated)."""
    if not src.exists():
        raise GridError(f"grid file {src} does not exist")
    try:
        return yaml.safe_load(src.read_text()) or {}
    except yaml.YAMLError as e:
        raise GridError(f"grid file {src} is not valid YAML: {e}") from None


def load_grid(grid: str | os.PathLike[str] | Mapping[str, Any]) -> Grid:
    """Parse a grid YAML (or dict); the base config path is taken relative to the grid file."""
    if isinstance(grid, Mapping):
        src, raw = None, dict(grid)
    else:
        src = Path(grid)
        raw = read_grid_file(src)
    g = validate_grid(raw)
    root = src.parent if src is not None else Path.cwd()  # relative paths: to the grid file
    base = g.base
    if isinstance(base, str):
        p = root / base
        if not p.exists():
            where = "the grid file" if src else "the working directory"
            raise GridError(f"base: config file {base} not found (relative to {where}: {p})")
        base = str(p)
    axes = [_axis(n, s, root) for n, s in (g.axes or {}).items()]
    if g.cv is not None:
        axes.append(fold_axis(g.cv))
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise GridError(f"axes: axis names repeat: {names}")
    overrides = g.overrides or []
    if isinstance(overrides, Mapping):
        overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    name = g.name or (src.stem if src else "grid")
    return Grid(
        name=name,
        base=base,
        axes=axes,
        overrides=[_absolute_arg(o, root) for o in overrides],
        out_dir=root / g.out_dir if g.out_dir else Path(f"runs/ablate/{name}"),
        replicates=tuple(g.replicates or DEFAULT_REPLICATES),
        on_missing=g.on_missing,
        report=dict(g.report or {}),
        cv=g.cv.model_dump(exclude_unset=True) if g.cv is not None else None,
        train_fn=g.train_fn,
        workers=g.workers or 1,
        stack=g.stack,
        source=src,
        labels={
            str(a): {str(k): str(v) for k, v in (m or {}).items()}
            for a, m in (g.labels or {}).items()
        },
    )


def grid_record(g: Grid) -> dict[str, Any]:
    """The expanded grid (axes as named bundles, folds included): loadable by ``load_grid``,
    so worker processes and later reruns see exactly these cells."""
    base = str(Path(g.base).resolve()) if isinstance(g.base, str) else g.base
    rec = {
        "name": g.name,
        "base": base,
        "overrides": g.overrides,
        "replicates": list(g.replicates),
        "on_missing": g.on_missing,
        "report": g.report,
        "labels": g.labels,
        "axes": {a.name: {lab: o for lab, o in a.values} for a in g.axes},
    }
    if g.train_fn:
        rec["train_fn"] = g.train_fn
    if g.stack != "auto":
        rec["stack"] = g.stack
    return rec


def with_overrides(g: Grid, overrides: Sequence[str]) -> list[str]:
    """Command-line overrides for every cell, checked against the keys the axes set."""
    varied = {k for a in g.axes for _, o in a.values for k in o}
    out = []
    for item in overrides:
        key, _ = parse_override(item)
        clash = sorted(
            k for k in varied if k == key or k.startswith(key + ".") or key.startswith(k + ".")
        )
        if clash:
            raise GridError(
                f"override {item!r} sets {clash[0]}, which a grid axis varies; change the "
                "axis in the grid file instead"
            )
        out.append(item)
    return out


def resolve_cell_config(grid: Grid, cell: Cell) -> RunConfig:
    """The validated run config of one cell (base <- grid overrides <- the cell's bundle)."""
    return load_config(grid.base, cell.override_args(grid.overrides))
