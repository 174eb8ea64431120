"""Before any cell trains: does every cell's config resolve, and are its features cached?

A config that does not validate is a mistake in the grid or its base, so it stops the grid
(``InvalidCellsError``); a feature file that is missing or was made with another config
(``data.expect``) only blocks the cells that read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avemo.data.store import FeatureFile, expectation_diffs
from avemo.fusion import registry as R
from avemo.fusion.config import ConfigError, RunConfig, config_dict
from avemo.fusion.spec import TaskSpec
from avemo.workflows.ablation.errors import InvalidCellsError
from avemo.workflows.ablation.spec import Cell, Grid, resolve_cell_config


def _expect_problem(ff: FeatureFile, expect: Mapping[str, Any]) -> str | None:
    """Why a cached file does not match ``data.expect`` (same rules as the datamodule: a
    ``config_hash``, and/or provenance keys where a partial ``config`` checks only its keys)."""
    return "; ".join(expectation_diffs(ff.provenance, expect)) or None


def _file_problem(mod: str, p: Path, expect: Mapping[str, Any]) -> str | None:
    if not p.exists():
        return f"{mod}: feature file {p} is not in the cache (run `avemo features`)"
    if not expect:
        return None
    try:
        with FeatureFile(p) as ff:
            why = _expect_problem(ff, expect)
    except Exception as e:  # noqa: BLE001 - unreadable file is a problem to report
        why = f"unreadable ({e})"
    return f"{mod}: {p} was made with another config: {why}" if why else None


def check_features(grid: Grid, cells: Sequence[Cell]) -> dict[str, list[str]]:
    """Cell id -> problems (missing feature file, provenance differing from ``data.expect``,
    missing manifest); empty lists for cells that can run. Each file is opened once. Raises
    ``InvalidCellsError`` (after looking at every cell) when a cell's config does not resolve.
    Feature and manifest paths are relative to the working directory, as the trainer reads them.
    """
    seen: dict[tuple[str, str], str | None] = {}
    built: dict[str, ConfigError | None] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    out: dict[str, list[str]] = {}
    invalid: dict[str, ConfigError] = {}
    for cell in cells:
        try:
            cfg = resolve_cell_config(grid, cell)
        except ConfigError as e:
            invalid[cell.cell_id] = e
            continue
        problems: list[str] = []
        data = cfg.data
        for mod, path in data.features.items():
            p = Path(str(path))
            expect = data.expect.get(mod, {})
            key = (str(p.resolve()), json.dumps(expect, sort_keys=True, default=str))
            if key not in seen:
                seen[key] = _file_problem(mod, p, expect)
            why = seen[key]
            if why:
                problems.append(why)
        if not Path(data.manifest).exists():
            problems.append(f"manifest {data.manifest} does not exist")
        if cfg.optim.groups and not problems:
            try:
                _check_groups(cfg, built, shapes)
            except ConfigError as e:
                invalid[cell.cell_id] = e
                continue
        out[cell.cell_id] = problems
    if invalid:
        raise InvalidCellsError(invalid, len(cells))
    return out


def _check_groups(
    cfg: RunConfig,
    built: dict[str, ConfigError | None],
    shapes: dict[str, tuple[int, ...]],
) -> None:
    """``optim.groups`` prefixes against the model this config builds (on the cached files' row
    shapes, each file opened once per grid; parameter names do not depend on the class count),
    once per distinct model: a prefix naming no module fails every cell at fit time, so it
    stops the grid here instead."""
    inputs = {}
    for mod, path in cfg.data.features.items():
        where = str(Path(str(path)).resolve())
        if where not in shapes:
            with FeatureFile(where) as ff:
                shapes[where] = tuple(ff.row_shape)
        inputs[mod] = shapes[where]
    key = json.dumps([config_dict(cfg.model), config_dict(cfg.optim), inputs], default=str)
    if key not in built:
        from avemo.fusion.optim import param_groups  # torch: only for grids that set groups

        R.load_all()
        level = R.TASKS.get(cfg.task.type).level
        spec = TaskSpec(level, 2, modalities=tuple(inputs))
        built[key] = None
        try:
            model = R.build_model(cfg.model, inputs, spec)
        except Exception:  # noqa: BLE001 - such a model fails, saying why, in its own run
            return
        try:
            param_groups(model, cfg.optim.groups)
        except ConfigError as e:
            built[key] = e
    err = built[key]
    if err is not None:
        raise err


def problem_summary(bad: Mapping[str, list[str]]) -> list[str]:
    """One line per distinct problem with the number of cells it blocks (grids repeat them)."""
    by_problem: dict[str, list[str]] = {}
    for cid, probs in bad.items():
        for p in probs:
            by_problem.setdefault(p, []).append(cid)
    return [f"  {p}  [{len(c)} cell(s), e.g. {c[0]}]" for p, c in by_problem.items()]
