"""Ablation grids from the feature cache: axes x base config -> cells -> runs -> table -> report.

A grid YAML names a base run config and axes; every combination of axis values is one cell,
trained with ``avemo.fusion.train.train_from_config`` inside this process, with one shared
``feature_cache`` so the HDF5 files are read (and moved to the device) once per grid, not once
per run. A cell is finished when its run folder holds ``DONE.json``, written last and
atomically; a killed grid rerun skips finished cells and redoes the half-written one. Cells
whose feature files are missing or were made with another config are reported before any run
starts; a cell whose config does not validate stops the grid, ``--dry-run`` included (exit 2).
Cells whose configs differ only by seed, learning rate, weight decay, loss options or early
stopping train together as one stacked model (``fusion.stacked``; ``stack: off`` trains every
cell alone); each still gets its own run folder and DONE.json. Processes (``RANK``/
``WORLD_SIZE`` from ``torchrun`` or plain env, ``SLURM_PROCID``/``SLURM_NTASKS`` under
``srun``, or ``workers: N`` local processes) claim cells atomically (``claims/``: O_EXCL files,
a dead local process's claims are reclaimed), so no worker idles while cells remain; rank 0
merges the table.

Grid YAML::

    name: demo
    base: ../configs/demo_fbp.yaml      # relative paths in a grid file: relative to it
    out_dir: ../../runs/ablate/demo     # optional; default runs/ablate/<name> in the cwd
    overrides: [trainer.max_epochs=3]   # applied to every cell
    axes:
      seed: [0, 1, 2]                   # list: the axis name is the dotted key
      temporal:                         # key + values
        key: model.temporal
        values: [mean, self_attention]
      fusion:                           # named bundles of overrides
        concat: {model.fusion: concat}
        fbp: {model.fusion: fbp, model.fbp.k: 5}
    cv: {method: kfold, k: 5}           # optional: adds a ``fold`` axis (see crossval.py)
    train_fn: pkg.module:function       # optional: another trainer with train_from_config's API
    workers: 2                          # optional: local processes sharing the cells (GPU: several
                                        # small runs at once; env AVEMO_GRID_WORKERS overrides)
    stack: auto                         # auto | on | off: cells differing only by seed, lr, weight
                                        # decay, loss or early stopping train as one stacked model
                                        # (auto: on a GPU; on a CPU stacking measured slower)
    replicates: [seed, fold]            # aggregated over (default: seed and fold)
    on_missing: skip                    # cells lacking features: skip (default) | error
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from avemo.fusion.config import ConfigError, absolute_override, parse_override
from avemo.progress import Progress

DONE = "DONE.json"
FAILED = "FAILED.json"
DEFAULT_REPLICATES = ("seed", "fold")
#: Top-level keys of a grid YAML (``definitions``: free space for YAML anchors; ``labels``:
#: axis -> value -> description, for reports).
GRID_KEYS = (
    "name",
    "base",
    "out_dir",
    "overrides",
    "axes",
    "cv",
    "train_fn",
    "workers",
    "replicates",
    "on_missing",
    "report",
    "labels",
    "definitions",
    "stack",
)
#: ``stack:`` values (auto: stack on a GPU only)
STACK_MODES = ("auto", "on", "off")
#: Most cells trained as one stacked model (memory grows with it; more cells -> more units).
STACK_MAX = 32
TrainFn = Callable[..., Mapping[str, Any]]


class GridError(ConfigError):
    """A grid that cannot run (bad YAML, unknown axis form, features missing with on_missing=error)."""


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
            cid = _cell_id(labels)
            conf = {k: v for k, v in labels.items() if k not in self.replicates}
            out.append(Cell(cid, labels, over, _cell_id(conf) or "all"))
        return out


# ----------------------------------------------------------------------------- grid parsing


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(s)).strip("-") or "x"


def _cell_id(labels: Mapping[str, str]) -> str:
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


def _parse_axis(name: str, spec: Any, root: Path | None = None) -> Axis:
    root = root or Path.cwd()

    def ab(key: str, v: Any) -> Any:
        return absolute_override(key, v, root)

    if isinstance(spec, list):
        return Axis(name, [(_label(v), {name: ab(name, v)}) for v in spec])
    if isinstance(spec, Mapping) and "key" in spec and "values" in spec:
        return Axis(name, [(_label(v), {spec["key"]: ab(spec["key"], v)}) for v in spec["values"]])
    if isinstance(spec, Mapping) and spec:
        vals = []
        for lab, bundle in spec.items():
            if not isinstance(bundle, Mapping):
                raise GridError(
                    f"axis {name!r}, value {lab!r}: a bundle must map dotted keys to values"
                )
            vals.append((str(lab), {k: ab(k, v) for k, v in bundle.items()}))
        return Axis(name, vals)
    raise GridError(
        f"axis {name!r} must be a list (axis name = dotted key), {{key, values}}, or a mapping "
        f"label -> {{dotted.key: value}}; got {spec!r}"
    )


def load_grid(grid: str | os.PathLike[str] | Mapping[str, Any]) -> Grid:
    """Parse a grid YAML (or dict); the base config path is taken relative to the grid file."""
    if isinstance(grid, Mapping):
        spec, src = dict(grid), None
    else:
        src = Path(grid)
        if not src.exists():
            raise GridError(f"grid file {src} does not exist")
        try:
            spec = yaml.safe_load(src.read_text()) or {}
        except yaml.YAMLError as e:
            raise GridError(f"grid file {src} is not valid YAML: {e}") from None
    unknown = [k for k in spec if k not in GRID_KEYS]
    if unknown:
        from avemo.errors import did_you_mean

        raise GridError(
            f"grid key {unknown[0]!r} is unknown{did_you_mean(unknown[0], GRID_KEYS)} "
            f"(keys: {', '.join(GRID_KEYS)})"
        )
    if "base" not in spec:
        raise GridError("a grid needs `base:` (a run config path or mapping)")
    root = src.parent if src is not None else Path.cwd()  # relative paths: to the grid file
    base = spec["base"]
    if not isinstance(base, Mapping):
        p = root / base
        if not p.exists():
            where = "the grid file" if src else "the working directory"
            raise GridError(f"grid base config {base} not found (relative to {where}: {p})")
        base = str(p)
    axes = [_parse_axis(n, s, root) for n, s in (spec.get("axes") or {}).items()]
    if spec.get("cv"):
        from avemo.workflows.crossval import fold_axis

        axes.append(fold_axis(spec["cv"]))
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise GridError(f"axis names repeat: {names}")
    stack = str(spec.get("stack", "auto")).lower()
    if stack not in STACK_MODES:
        raise GridError(f"stack must be one of {', '.join(STACK_MODES)}, got {spec.get('stack')!r}")
    on_missing = spec.get("on_missing", "skip")
    if on_missing not in ("skip", "error"):
        raise GridError(f"on_missing must be skip or error, got {on_missing!r}")
    overrides = spec.get("overrides") or []
    if isinstance(overrides, Mapping):
        overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    overrides = [_absolute_arg(o, root) for o in overrides]
    name = spec.get("name") or (src.stem if src else "grid")
    return Grid(
        name=name,
        base=base if isinstance(base, str) else dict(base),
        axes=axes,
        overrides=list(overrides),
        out_dir=root / spec["out_dir"] if spec.get("out_dir") else Path(f"runs/ablate/{name}"),
        replicates=tuple(spec.get("replicates") or DEFAULT_REPLICATES),
        on_missing=on_missing,
        report=dict(spec.get("report") or {}),
        cv=dict(spec["cv"]) if spec.get("cv") else None,
        train_fn=spec.get("train_fn"),
        workers=int(spec.get("workers") or 1),
        stack=stack,
        source=src,
        labels={
            str(a): {str(k): str(v) for k, v in (m or {}).items()}
            for a, m in (spec.get("labels") or {}).items()
        },
    )


# ----------------------------------------------------------------------------- feature checks


def resolve_cell_config(grid: Grid, cell: Cell) -> dict[str, Any]:
    from avemo.fusion.config import load_config

    return load_config(grid.base, cell.override_args(grid.overrides))


def _feature_path(path: str, cfg: Mapping[str, Any]) -> Path:
    """Feature and manifest paths are relative to the working directory, as the trainer reads them."""
    return Path(path)


def _expect_problem(ff: Any, expect: Mapping[str, Any]) -> str | None:
    """Why a cached file does not match ``data.expect`` (same rules as the datamodule: a
    ``config_hash``, and/or provenance keys where a partial ``config`` checks only its keys)."""
    from avemo.data.store import expectation_diffs

    return "; ".join(expectation_diffs(ff.provenance, expect)) or None


def check_features(grid: Grid, cells: Sequence[Cell]) -> dict[str, list[str]]:
    """Cell id -> problems (missing feature file, provenance differing from ``data.expect``,
    config that does not resolve); empty lists for cells that can run. Each file is opened once.
    """
    from avemo.data.store import FeatureFile

    seen: dict[tuple[str, str], str | None] = {}
    out: dict[str, list[str]] = {}
    for cell in cells:
        problems: list[str] = []
        try:
            cfg = resolve_cell_config(grid, cell)
        except ConfigError as e:
            out[cell.cell_id] = [f"config: {e}"]
            continue
        data = cfg.get("data", {})
        for mod, path in (data.get("features") or {}).items():
            p = _feature_path(str(path), cfg)
            expect = (data.get("expect") or {}).get(mod) or {}
            key = (str(p.resolve()), json.dumps(expect, sort_keys=True, default=str))
            if key not in seen:
                if not p.exists():
                    seen[key] = (
                        f"{mod}: feature file {p} is not in the cache (run `avemo features`)"
                    )
                elif expect:
                    try:
                        with FeatureFile(p) as ff:
                            why = _expect_problem(ff, expect)
                    except Exception as e:  # noqa: BLE001 - unreadable file is a problem to report
                        why = f"unreadable ({e})"
                    seen[key] = f"{mod}: {p} was made with another config: {why}" if why else None
                else:
                    seen[key] = None
            if seen[key]:
                problems.append(seen[key])  # type: ignore[arg-type]
        manifest = data.get("manifest")
        if manifest and not _feature_path(str(manifest), cfg).exists():
            problems.append(f"manifest {manifest} does not exist")
        out[cell.cell_id] = problems
    return out


# ----------------------------------------------------------------------------- running


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_plain(obj), indent=1, default=str))
    os.replace(tmp, path)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _cell_hash(grid: Grid, cell: Cell) -> str:
    base = grid.base
    if isinstance(base, str):
        base = Path(base).read_text()
    blob = json.dumps([base, grid.overrides, cell.overrides], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cell_state(run_dir: Path, want_hash: str) -> str:
    """done | stale (finished with another config) | partial | failed | todo."""
    done = run_dir / DONE
    if done.exists():
        try:
            have = json.loads(done.read_text()).get("cell_hash")
        except (json.JSONDecodeError, OSError):
            return "partial"
        return "done" if have == want_hash else "stale"
    if (run_dir / FAILED).exists():
        return "failed"
    return "partial" if run_dir.exists() else "todo"


class SharedDataTrainer:
    """``train_from_config`` for grids: cells whose data side is identical (same ``data``,
    ``split``, ``task`` and, when the split shuffles, seed) share one prepared datamodule --
    manifest read, split, index tables and normalisation statistics are built once, not per
    cell. Only the batch-order seed is set per cell, so every run equals its stand-alone
    ``avemo fuse-train`` run.
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._dms: dict[str, Any] = {}

    @staticmethod
    def data_key(cfg: Mapping[str, Any], device: str) -> str:
        key = {k: cfg.get(k) for k in ("data", "split", "task")}
        if cfg["split"].get("shuffle"):
            key["seed"] = cfg.get("seed")
        return json.dumps([key, device], sort_keys=True, default=str)

    def __call__(
        self,
        config: Any,
        overrides: Sequence[str] | None = None,
        *,
        feature_cache: dict | None = None,
        run_dir: Path | None = None,
    ) -> Mapping[str, Any]:
        from avemo.fusion import train as T
        from avemo.fusion.config import dump_config, load_config

        cfg = load_config(config, list(overrides or []))
        run_dir = T.make_run_dir(cfg, run_dir)
        dump_config(cfg, run_dir / "config.yaml")
        dm = self.datamodule(cfg, feature_cache)
        dm.seed = int(cfg.get("seed") or 0)  # per-run batch order, as in a fresh datamodule
        return T.fit_and_evaluate(cfg, dm, run_dir)  # also writes the run's data side

    def datamodule(self, cfg: Mapping[str, Any], feature_cache: dict | None) -> Any:
        """The prepared datamodule of ``cfg``'s data side (built once, kept for ``keep`` keys)."""
        from avemo.fusion import train as T

        device, _ = T.trainer_device(cfg["trainer"].get("accelerator"))
        key = self.data_key(cfg, device)
        dm = self._dms.pop(key, None)
        if dm is None:
            dm = T.build_datamodule(cfg, device, feature_cache)
        self._dms[key] = dm  # most recently used last
        while len(self._dms) > self.keep:
            self._dms.pop(next(iter(self._dms)))
        return dm


def default_train_fn(spec: str | None = None) -> TrainFn:
    """Shared-datamodule ``train_from_config``, or the grid's ``train_fn: module:function``."""
    import importlib

    if spec is None:
        return SharedDataTrainer()
    mod, _, fn = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), fn or "train_from_config")
    except (ImportError, AttributeError) as e:
        raise GridError(f"train_fn {spec!r} cannot be imported: {e}") from None


def _save_predictions(run_dir: Path, preds: Any) -> None:
    if isinstance(preds, pd.DataFrame) and not any(run_dir.glob("predictions*")):
        preds.to_csv(run_dir / "predictions.csv", index=False)


def run_cell(
    grid: Grid, cell: Cell, run_dir: Path, train_fn: TrainFn, feature_cache: dict
) -> dict[str, Any]:
    """Train one cell into ``run_dir``; DONE.json is the last thing written."""
    if run_dir.exists():  # half-written by a killed run, stale or failed: start clean
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "cell_id": cell.cell_id,
        "config_id": cell.config_id,
        "labels": cell.labels,
        "overrides": cell.overrides,
        "cell_hash": _cell_hash(grid, cell),
    }
    try:
        result = train_fn(
            grid.base,
            cell.override_args(grid.overrides),
            feature_cache=feature_cache,
            run_dir=run_dir,
        )
    except Exception as e:  # noqa: BLE001 - one bad cell must not end the grid
        record.update(
            status="failed",
            error=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc(),
            wall_s=time.perf_counter() - t0,
        )
        _write_json(run_dir / FAILED, record)
        print(f"[ablate] cell {cell.cell_id} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return record
    _save_predictions(run_dir, result.get("predictions"))
    extra = {
        k: v for k, v in result.items() if "/" in k and not isinstance(v, Path)
    }  # e.g. test/confusion
    record.update(
        status="done",
        metrics=dict(result.get("metrics") or {}),
        extra=extra,
        wall_s=time.perf_counter() - t0,
        trained_in=str(result.get("run_dir", run_dir)),
    )
    _write_json(run_dir / DONE, record)
    return record


def _record(grid: Grid, cell: Cell) -> dict[str, Any]:
    return {
        "cell_id": cell.cell_id,
        "config_id": cell.config_id,
        "labels": cell.labels,
        "overrides": cell.overrides,
        "cell_hash": _cell_hash(grid, cell),
    }


def plan_units(grid: Grid, cells: Sequence[Cell], stack: str = "auto") -> list[list[Cell]]:
    """Cells grouped into units of work: with ``stack: on`` the cells whose configs differ
    only by ``fusion.stacked.STACKABLE_KEYS`` (same data side) form one unit (at most
    ``STACK_MAX``), trained as one stacked model; every other cell is a unit of its own.
    ``auto`` stacks the cells that train on a GPU, where one stacked step replaces several
    kernel launches per layer; on a CPU the work is the same FLOPs either way, and the
    AFEW-scale grid took 39.9 s stacked vs 27.9 s (``python -m avemo.bench --only grid``)."""
    if stack == "off":
        return [[c] for c in cells]
    from avemo.fusion.stacked import stack_key
    from avemo.fusion.train import trainer_device

    groups: dict[str, list[Cell]] = {}
    for c in cells:
        cfg = resolve_cell_config(grid, c)
        device, _ = trainer_device(cfg["trainer"].get("accelerator"))
        if stack == "auto" and not str(device).startswith("cuda"):
            groups[c.cell_id] = [
                c
            ]  # a unit of its own (cell ids are unique, JSON keys never equal one)
            continue
        key = json.dumps([SharedDataTrainer.data_key(cfg, device), stack_key(cfg)])
        groups.setdefault(key, []).append(c)
    return [g[i : i + STACK_MAX] for g in groups.values() for i in range(0, len(g), STACK_MAX)]


def run_unit(
    grid: Grid,
    unit: Sequence[Cell],
    out: Path,
    train_fn: TrainFn,
    feature_cache: dict,
    say: Callable[..., None] = print,
) -> list[dict[str, Any]]:
    """One cell as ``run_cell``; several as one stacked model (``fusion.stacked``), each cell's
    folder and DONE.json as a separate run writes them. Cells that cannot be stacked (the log
    says why) or a stacked fit that fails are trained one by one instead."""
    dirs = [out / "runs" / c.cell_id for c in unit]
    if len(unit) == 1 or not isinstance(train_fn, SharedDataTrainer):
        return [
            run_cell(grid, c, d, train_fn, feature_cache) for c, d in zip(unit, dirs, strict=True)
        ]
    from avemo.fusion.stacked import fit_stacked, why_not_stackable

    cfgs = [resolve_cell_config(grid, c) for c in unit]
    why = why_not_stackable(cfgs[0])
    if why is None:
        t0 = time.perf_counter()
        for d in dirs:
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        try:
            dm = train_fn.datamodule(cfgs[0], feature_cache)
            results = fit_stacked(
                cfgs, dm, dirs, verbose=bool(cfgs[0]["output"].get("verbose", True))
            )
        except Exception as e:  # noqa: BLE001 - fall back to separate runs, saying why
            why = f"{type(e).__name__}: {e}"
        else:
            wall = time.perf_counter() - t0
            recs = []
            for c, d, res in zip(unit, dirs, results, strict=True):
                extra = {k: v for k, v in res.items() if "/" in k and not isinstance(v, Path)}
                rec = {
                    **_record(grid, c),
                    "status": "done",
                    "metrics": dict(res.get("metrics") or {}),
                    "extra": extra,
                    "wall_s": wall / len(unit),
                    "stacked": len(unit),
                    "trained_in": str(d),
                }
                _write_json(d / DONE, rec)
                recs.append(rec)
            return recs
    say(f"{len(unit)} cells ({unit[0].cell_id}, ...) trained separately, not stacked: {why}")
    return [run_cell(grid, c, d, train_fn, feature_cache) for c, d in zip(unit, dirs, strict=True)]


class Claims:
    """Atomic cell claims shared by every worker of a grid (local or on other machines over a
    shared folder): ``claims/<cell>.claim`` created with O_EXCL holds host and pid. A claim
    whose process is gone (same host, pid not alive) is reclaimed; one from another host
    stands until its cell is finished or the file is removed."""

    def __init__(self, folder: Path) -> None:
        import socket

        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.pid = socket.gethostname(), os.getpid()

    def _path(self, cell_id: str) -> Path:
        return self.dir / f"{cell_id}.claim"

    def take(self, cell_id: str) -> bool:
        path = self._path(cell_id)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale(path):
                    return False
                try:  # one reclaimer wins the rename; the others see the new claim
                    os.rename(path, path.with_name(f"{path.name}.stale-{self.pid}"))
                    os.unlink(path.with_name(f"{path.name}.stale-{self.pid}"))
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": self.host, "pid": self.pid, "time": time.time()}, f)
            return True
        return False

    def _stale(self, path: Path) -> bool:
        try:
            rec = json.loads(path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return time.time() - path.stat().st_mtime > 60 if path.exists() else True
        if rec.get("host") != self.host:
            return False
        try:
            os.kill(int(rec.get("pid", -1)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OverflowError):
            return False
        return False

    def release(self, cell_id: str) -> None:
        self._path(cell_id).unlink(missing_ok=True)


def shard(cells: Sequence[Cell], rank: int, world: int) -> list[Cell]:
    """Round-robin share of rank ``rank`` among ``world`` processes."""
    return list(cells[rank::world])


def dist_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's RANK/WORLD_SIZE, else SLURM's SLURM_PROCID/SLURM_NTASKS."""
    env = os.environ
    rank = env.get("RANK", env.get("SLURM_PROCID", "0"))
    world = env.get("WORLD_SIZE", env.get("SLURM_NTASKS", "1"))
    return int(rank), int(world)


DIST_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_USE_AGENT_STORE",
)


class _single_process_env:
    """Hide torchrun's variables while cells train: Lightning would otherwise treat every
    single-device run as one rank of a distributed job (the grid, not the run, is sharded)."""

    def __enter__(self) -> None:
        self.saved = {k: os.environ.pop(k) for k in DIST_ENV if k in os.environ}

    def __exit__(self, *exc: object) -> None:
        os.environ.update(self.saved)


def _init_torch_dist(world: int) -> bool:
    """Under torchrun (MASTER_ADDR set) use a gloo group for the final barrier."""
    if world <= 1 or not os.environ.get("MASTER_ADDR"):
        return False
    import torch.distributed as dist

    if not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return True


def _wait_for_shards(
    out: Path, world: int, cells: Sequence[Cell], since: float, timeout_s: float
) -> None:
    """Rank 0 waits until every runnable cell is finished (DONE or FAILED) or every rank has
    left a marker written after ``since``; a stale marker of an earlier run does not count."""
    t0 = time.monotonic()
    while True:
        if all(
            (out / "runs" / c.cell_id / DONE).exists()
            or (out / "runs" / c.cell_id / FAILED).exists()
            for c in cells
        ):
            return
        fresh = [
            p for p in (out / "shards").glob(f"rank*-of-{world}.json") if p.stat().st_mtime >= since
        ]
        if len(fresh) >= world:
            return
        if time.monotonic() - t0 > timeout_s:
            print(
                f"[ablate] waited {timeout_s:.0f}s for the other ranks; "
                "the table covers the cells finished so far",
                file=sys.stderr,
            )
            return
        time.sleep(0.5)


def _spawn_workers(out: Path, n: int, quiet: bool) -> list[Any]:
    """Ranks 1..n-1 as local subprocesses on the recorded grid; this process is rank 0."""
    import subprocess

    procs = []
    threads = max(1, (os.cpu_count() or 1) // n)
    for r in range(1, n):
        env = {
            **os.environ,
            "RANK": str(r),
            "WORLD_SIZE": str(n),
            "AVEMO_GRID_WORKERS": "1",
            "OMP_NUM_THREADS": str(threads),
        }
        env.pop("MASTER_ADDR", None)  # plain env sharding between the local workers
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "avemo.workflows.ablate",
                    str(out / "grid.yaml"),
                    "-o",
                    str(out),
                ],
                env=env,
                stdout=subprocess.DEVNULL if quiet else None,
            )
        )
    return procs


def run_grid(
    grid: str | os.PathLike[str] | Mapping[str, Any] | Grid,
    out_dir: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    *,
    train_fn: TrainFn | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    report: bool = True,
    feature_cache: dict | None = None,
    quiet: bool = False,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or, with ``dry_run``, plan) every cell of a grid; returns out_dir, table, aggregate,
    per-cell states and feature problems. Rerunning continues where a killed run stopped.
    ``overrides`` (``key=value``, as for ``fuse-train``) apply to every cell, after the grid's
    own ``overrides``; a key that an axis varies is refused (the axis would win silently).
    """
    g = grid if isinstance(grid, Grid) else load_grid(grid)
    if overrides:
        g.overrides = [*g.overrides, *_cell_overrides(g, overrides)]
    out = Path(out_dir) if out_dir else g.out_dir
    env_rank, env_world = dist_env()
    rank = env_rank if rank is None else rank
    world = env_world if world_size is None else world_size
    say = (lambda *a: None) if quiet else (lambda *a: print("[ablate]", *a, file=sys.stderr))  # noqa: E731
    stack = (os.environ.get("AVEMO_GRID_STACK") or g.stack).lower()
    if stack not in STACK_MODES:  # before anything is planned or written
        raise GridError(f"AVEMO_GRID_STACK must be one of {', '.join(STACK_MODES)}, got {stack!r}")
    cells = g.cells()
    problems = check_features(g, cells)
    wrong = {c: p for c, p in problems.items() if any(x.startswith("config: ") for x in p)}
    if wrong:  # a mistake in the grid or its base: no cell runs, dry run or not
        first = next(iter(wrong))
        msg = next(x for x in wrong[first] if x.startswith("config: "))[len("config: ") :]
        raise GridError(
            f"{len(wrong)} of {len(cells)} cell(s) have an invalid config, e.g. cell {first}: {msg}"
        )
    bad = {c: p for c, p in problems.items() if p}
    if bad:
        lines = _problem_summary(bad)
        say(f"{len(bad)} of {len(cells)} cell(s) cannot run from the cache:\n" + "\n".join(lines))
        if g.on_missing == "error" and not dry_run:
            raise GridError(
                f"{len(bad)} cell(s) need features not in the cache:\n" + "\n".join(lines)
            )
    states = {c.cell_id: cell_state(out / "runs" / c.cell_id, _cell_hash(g, c)) for c in cells}
    say(
        f"grid {g.name}: {len(cells)} cells, {sum(s == 'done' for s in states.values())} done, "
        f"{len(bad)} missing features; rank {rank}/{world}; out {out}"
    )
    if dry_run:
        plan = pd.DataFrame(
            [
                {
                    "cell_id": c.cell_id,
                    **c.labels,
                    "state": states[c.cell_id],
                    "problems": "; ".join(problems[c.cell_id]),
                }
                for c in cells
            ]
        )
        if not quiet:
            print(plan.to_string(index=False))
        return {
            "out_dir": out,
            "table": plan,
            "aggregate": None,
            "states": states,
            "problems": problems,
        }

    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.yaml").write_text(yaml.safe_dump(_grid_record(g), sort_keys=False))
    if g.cv and rank == 0:
        from avemo.workflows.crossval import save_fold_lists

        try:
            save_fold_lists(g.base, g.cv, out, cells[0].override_args(g.overrides))
        except Exception as e:  # noqa: BLE001 - each run still writes its own fold lists
            say(f"fold lists not saved: {type(e).__name__}: {e}")
    workers = int(os.environ.get("AVEMO_GRID_WORKERS") or g.workers)
    procs: list[Any] = []
    if workers > 1 and world == 1:
        procs = _spawn_workers(out, workers, quiet)
        world = workers
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    stack = stack if train_fn is None and not g.train_fn else "off"
    train_fn = train_fn or default_train_fn(g.train_fn)
    cache = {} if feature_cache is None else feature_cache
    runnable = [c for c in cells if c.cell_id not in bad]
    units = plan_units(g, runnable, stack)
    k = rank * len(units) // max(world, 1)
    units = units[k:] + units[:k]  # each worker starts elsewhere, then takes whatever is unclaimed
    claims = Claims(out / "claims")
    t0 = time.perf_counter()
    started = time.time() - 1.0
    ran = 0
    todo = sum(states[c.cell_id] != "done" for c in runnable)
    prog = Progress(
        f"grid {g.name}" + (f" rank {rank}" if world > 1 else ""), todo, "cells", enabled=not quiet
    )
    # each cell is a one-process run, even under torchrun
    with _single_process_env(), prog:
        for unit in units:
            got = [
                c
                for c in unit
                if cell_state(out / "runs" / c.cell_id, _cell_hash(g, c)) != "done"
                and claims.take(c.cell_id)
            ]
            for c in [
                c for c in got if cell_state(out / "runs" / c.cell_id, _cell_hash(g, c)) == "done"
            ]:
                claims.release(c.cell_id)  # finished by another worker while we looked
                got.remove(c)
            if not got:
                continue
            try:
                recs = run_unit(g, got, out, train_fn, cache, say)
            finally:
                for c in got:
                    claims.release(c.cell_id)
            for cell, rec in zip(got, recs, strict=True):
                ran += 1
                states[cell.cell_id] = rec["status"]
                if not quiet:
                    how = f" (stacked x{rec['stacked']})" if rec.get("stacked") else ""
                    prog.write(
                        f"[ablate] {cell.cell_id}: {rec['status']} in {rec['wall_s']:.1f}s{how} "
                        + _brief(rec.get("metrics", {}))
                    )
                prog.update(1, bad=rec["status"] != "done")
    wall = time.perf_counter() - t0
    use_dist = _init_torch_dist(world)
    if world > 1:
        (out / "shards").mkdir(exist_ok=True)
        _write_json(out / "shards" / f"rank{rank}-of-{world}.json", {"rank": rank, "ran": ran})
        if use_dist:
            import torch.distributed as dist

            dist.barrier()
        elif rank == 0:
            _wait_for_shards(
                out, world, runnable, started, float(os.environ.get("AVEMO_SHARD_WAIT_S", "86400"))
            )
        for p in procs:
            p.wait()
        if rank != 0:
            return {
                "out_dir": out,
                "table": None,
                "aggregate": None,
                "states": states,
                "problems": problems,
                "ran": ran,
                "wall_s": wall,
            }
    table = collect_table(out, cells, bad)
    agg = aggregate(table)
    write_tables(out, table, agg)
    result = {
        "out_dir": out,
        "table": table,
        "aggregate": agg,
        "states": states,
        "problems": problems,
        "ran": ran,
        "wall_s": wall,
    }
    if report and len(table):
        from avemo.workflows.report import write_report

        try:
            result["report"] = write_report(
                out, table, agg, grid=g, feature_cache=cache, **g.report
            )
        except Exception as e:  # noqa: BLE001 - a plotting problem must not lose the table
            print(f"[ablate] report failed: {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exc()
    return result


def _problem_summary(bad: Mapping[str, list[str]]) -> list[str]:
    """One line per distinct problem with the number of cells it blocks (grids repeat them)."""
    by_problem: dict[str, list[str]] = {}
    for cid, probs in bad.items():
        for p in probs:
            by_problem.setdefault(p, []).append(cid)
    return [f"  {p}  [{len(c)} cell(s), e.g. {c[0]}]" for p, c in by_problem.items()]


def _brief(metrics: Mapping[str, Any]) -> str:
    items = [
        (k, v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    return " ".join(f"{k}={v:.4g}" for k, v in items[:4])


def _cell_overrides(g: Grid, overrides: Sequence[str]) -> list[str]:
    """Command-line overrides for every cell, checked against the keys the axes set."""
    from avemo.fusion.config import parse_override

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


def _grid_record(g: Grid) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------- tables


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def collect_table(
    out: Path, cells: Sequence[Cell], missing: Mapping[str, list[str]] | None = None
) -> pd.DataFrame:
    """One row per cell of the grid, from the DONE/FAILED records on disk (all ranks')."""
    rows = []
    for c in cells:
        run_dir = out / "runs" / c.cell_id
        row: dict[str, Any] = {"cell_id": c.cell_id, "config_id": c.config_id, **c.labels}
        if (run_dir / DONE).exists():
            rec = json.loads((run_dir / DONE).read_text())
            row.update(
                status="done",
                wall_s=rec.get("wall_s"),
                run_dir=str(run_dir),
                **_scalar_metrics(rec.get("metrics", {})),
            )
        elif (run_dir / FAILED).exists():
            rec = json.loads((run_dir / FAILED).read_text())
            row.update(status="failed", error=rec.get("error"), run_dir=str(run_dir))
        elif missing and missing.get(c.cell_id):
            row.update(status="missing_features", error="; ".join(missing[c.cell_id]))
        else:
            row.update(status="not_run")
        rows.append(row)
    return pd.DataFrame(rows)


META = ("cell_id", "config_id", "status", "wall_s", "run_dir", "error")


def metric_columns(table: pd.DataFrame, axes: Sequence[str] = ()) -> list[str]:
    return [
        c
        for c in table.columns
        if c not in META and c not in axes and pd.api.types.is_numeric_dtype(table[c])
    ]


def axis_columns(table: pd.DataFrame) -> list[str]:
    return [
        c for c in table.columns if c not in META and not pd.api.types.is_numeric_dtype(table[c])
    ]


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count per config (over the replicate axes: seeds and folds)."""
    done = table[table["status"] == "done"] if "status" in table else table
    if done.empty:
        return pd.DataFrame(columns=["config_id", "n"])
    axes = axis_columns(done)
    mcols = metric_columns(done, axes)
    rows = []
    for cid, grp in done.groupby("config_id", sort=False):
        row: dict[str, Any] = {"config_id": cid, "n": len(grp)}
        for m in mcols:
            vals = grp[m].dropna()
            row[f"{m}_mean"] = float(vals.mean()) if len(vals) else float("nan")
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def write_tables(out: Path, table: pd.DataFrame, agg: pd.DataFrame) -> None:
    for name, df in (("results", table), ("aggregate", agg)):
        df.to_csv(out / f"{name}.csv", index=False)
        try:
            df.to_parquet(out / f"{name}.parquet", index=False)
        except Exception as e:  # noqa: BLE001 - CSV is the fallback, say why Parquet failed
            print(f"[ablate] {name}.parquet not written: {e}", file=sys.stderr)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m avemo.workflows.ablate`` (workers, torchrun and srun use it)."""
    p.add_argument("grid", help="grid YAML")
    p.add_argument("-o", "--output", help="results folder (default: the grid's out_dir)")
    p.add_argument("--dry-run", action="store_true", help="plan and check the cells, train nothing")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides for every cell (e.g. data.features_dir=features/ravdess)",
    )


def run(a: argparse.Namespace) -> int:
    res = run_grid(a.grid, out_dir=a.output, dry_run=a.dry_run, overrides=a.overrides)
    print(f"results: {res['out_dir']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m avemo.workflows.ablate GRID [-o OUT] [--dry-run]`` (same as ``avemo ablate``;
    a mistake in the grid is one line and exit 2 in every worker, not a traceback)."""
    from avemo.workflows.entry import module_main

    return module_main("ablate", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
