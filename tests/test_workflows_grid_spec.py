"""Grid files are validated like run configs (``key: reason, got value``, did-you-mean, one
line and exit 2 from the command), a cell's outcome is a ``CellStatus`` whose values are the
words earlier grid folders hold on disk, and what stops a grid is an exception type."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from avemo.fusion.config import ConfigError, load_config
from avemo.workflows import ablate
from avemo.workflows.ablation import (
    CellStatus,
    GridError,
    InvalidCellsError,
    cell_state,
    collect_table,
    load_grid,
    run_grid,
)
from avemo.workflows.ablation.cells import cell_hash, cell_hashes

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "workflows" / "configs" / "demo_fbp.yaml"


def _grid(**extra) -> dict:
    return {"name": "g", "base": str(BASE), "axes": {"seed": [0, 1]}, **extra}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"axis": {"seed": [0]}}, "axis: unknown key, did you mean axes?"),
        ({"cv": {"k": 3, "fodls": [0]}}, "cv.fodls: unknown key, did you mean folds?"),
        ({"cv": {"method": "kfold"}}, "cv.k is required"),
        ({"cv": {"k": 1}}, "cv.k: input should be greater than or equal to 2, got 1"),
        ({"on_missing": "maybe"}, "on_missing: input should be 'skip' or 'error', got 'maybe'"),
        ({"workers": 0}, "workers: input should be greater than or equal to 1, got 0"),
        ({"base": 3}, "base: must be a run config path or a mapping, got 3"),
        (
            {"overrides": [{"seed": 1}]},
            "overrides: must be a list of KEY=VALUE strings or a mapping dotted.key -> value, "
            "got [{'seed': 1}]",
        ),
        ({"stack": "yes"}, "stack: input should be 'auto', 'on' or 'off', got 'yes'"),
    ],
)
def test_grid_mistakes_read_like_run_config_mistakes(extra, message):
    with pytest.raises(GridError) as e:
        load_grid(_grid(**extra))
    assert str(e.value) == message


def test_a_grid_needs_a_base():
    with pytest.raises(GridError, match="^base is required$"):
        load_grid({"axes": {"seed": [0]}})


def test_the_same_mistake_reads_the_same_in_a_run_config_and_a_grid():
    """A misspelt key of a run config and of a grid file's ``cv:`` block: one form."""
    with pytest.raises(ConfigError) as run_cfg:
        load_config(BASE, ["trainer.max_epoch=5"])
    with pytest.raises(GridError) as grid:
        load_grid(_grid(cv={"k": 3, "metod": "kfold"}))
    assert str(run_cfg.value) == "trainer.max_epoch: unknown key, did you mean max_epochs?"
    assert str(grid.value) == "cv.metod: unknown key, did you mean method?"


def test_axis_forms_are_checked_per_axis():
    with pytest.raises(GridError, match=r"^axes\.lr: \{key, values\} takes no other keys \(vals\)"):
        load_grid(_grid(axes={"lr": {"key": "optim.lr", "values": [0.1], "vals": [1]}}))
    with pytest.raises(GridError, match=r"^axes\.lr: \{key, values\} needs .* a list of values"):
        load_grid(_grid(axes={"lr": {"key": "optim.lr", "values": 0.1}}))
    with pytest.raises(GridError, match=r"^axes\.m: value 'a': a bundle must map dotted keys"):
        load_grid(_grid(axes={"m": {"a": 3}}))


def test_a_bare_yaml_off_means_stack_off(tmp_path):
    """YAML 1.1 reads ``stack: off`` as False; the grid means the mode ``off``."""
    text = f"base: {BASE}\naxes: {{seed: [0]}}\nstack: off\n"
    assert yaml.safe_load(text)["stack"] is False
    path = tmp_path / "g.yaml"
    path.write_text(text)
    assert load_grid(path).stack == "off"
    path.write_text(text.replace("stack: off", "stack: On"))
    assert load_grid(path).stack == "on"


def test_the_command_refuses_a_bad_grid_in_one_line_with_exit_2(tmp_path, capsys):
    """``python -m avemo.workflows.ablate`` (what workers, torchrun and srun run)."""
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"base": str(BASE), "axis": {"seed": [0]}}))
    assert ablate.main([str(grid), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["avemo ablate: error: axis: unknown key, did you mean axes?"]
    assert not (tmp_path / "out").exists()


def test_invalid_cell_configs_are_one_exception_holding_each_cells_error(tmp_path):
    g = _grid(axes={"seed": [0, 1], "trainer.max_epoch": [1]})
    with pytest.raises(InvalidCellsError) as e:
        run_grid(g, out_dir=tmp_path / "out", dry_run=True, quiet=True)
    cells = {c.cell_id for c in load_grid(g).cells()}
    assert set(e.value.invalid) == cells and e.value.total == 2
    assert all(isinstance(x, ConfigError) for x in e.value.invalid.values())
    assert "trainer.max_epoch: unknown key" in str(e.value) and str(e.value).startswith("2 of 2")
    assert not (tmp_path / "out").exists()


def test_cell_states_and_table_read_grid_folders_written_before_the_redesign(tmp_path):
    """Records as earlier versions wrote them (these keys and words): resumed as they were."""
    g = load_grid(_grid(axes={"seed": [0, 1, 2, 3, 4]}))
    cells = g.cells()
    runs = tmp_path / "runs"
    old = {
        "cell_id": cells[0].cell_id,
        "config_id": cells[0].config_id,
        "labels": cells[0].labels,
        "overrides": cells[0].overrides,
        "cell_hash": cell_hash(g, cells[0]),
        "status": "done",
        "metrics": {"test/uar": 0.5, "test/accuracy": 0.75, "epochs": 3, "flag": True},
        "extra": {},
        "wall_s": 1.5,
        "trained_in": str(runs / cells[0].cell_id),
    }
    (runs / cells[0].cell_id).mkdir(parents=True)
    (runs / cells[0].cell_id / "DONE.json").write_text(json.dumps(old))
    (runs / cells[1].cell_id).mkdir()
    (runs / cells[1].cell_id / "DONE.json").write_text(json.dumps({**old, "cell_hash": "0" * 16}))
    (runs / cells[2].cell_id).mkdir()
    (runs / cells[2].cell_id / "FAILED.json").write_text(
        json.dumps({"status": "failed", "error": "ValueError: boom"})
    )
    (runs / cells[3].cell_id).mkdir()  # a killed run's folder
    got = [cell_state(runs / c.cell_id, cell_hash(g, c)) for c in cells]
    assert got == ["done", "stale", "failed", "partial", "todo"]
    assert [type(s) for s in got] == [CellStatus] * 5
    table = collect_table(tmp_path, cells, {cells[4].cell_id: ["audio: feature file x.h5 ..."]})
    assert list(table["status"]) == ["done", "done", "failed", "not_run", "missing_features"]
    row = table.iloc[0]
    assert row["test/uar"] == 0.5 and row["epochs"] == 3.0 and "flag" not in table
    assert table.iloc[2]["error"] == "ValueError: boom"
    assert pd.isna(table.iloc[3]["error"])


def test_cell_hash_follows_the_base_chain_values_not_its_text(tmp_path):
    """A comment edit in the base leaves finished cells done; a value changed in the base's
    own base makes them stale (the text of the top file alone missed both ways)."""
    parent = tmp_path / "parent.yaml"
    child = tmp_path / "child.yaml"
    parent.write_text(BASE.read_text())
    child.write_text("base: parent.yaml\ntrainer: {max_epochs: 2}\n")
    g = load_grid(_grid(base=str(child)))
    cell = g.cells()[0]
    before = cell_hash(g, cell)
    child.write_text("# a note\nbase: parent.yaml   # the demo\ntrainer:\n  max_epochs: 2\n")
    assert cell_hash(load_grid(_grid(base=str(child))), cell) == before
    cfg = yaml.safe_load(parent.read_text())
    cfg["seed"] = int(cfg.get("seed", 0)) + 1
    parent.write_text(yaml.safe_dump(cfg))
    assert cell_hash(load_grid(_grid(base=str(child))), cell) != before


def test_records_hashed_the_earlier_way_still_count_as_done(tmp_path):
    """Before 2026-12-06 a record's hash was sha256 over [base file text, grid overrides, cell
    overrides] (written out here): such grid folders resume without retraining."""
    g = load_grid(_grid())
    cell = g.cells()[0]
    blob = json.dumps([BASE.read_text(), g.overrides, cell.overrides], sort_keys=True, default=str)
    legacy = hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert legacy != cell_hash(g, cell)
    run = tmp_path / cell.cell_id
    run.mkdir()
    (run / "DONE.json").write_text(json.dumps({"cell_hash": legacy, "status": "done"}))
    assert cell_state(run, cell_hashes(g, cell)) == CellStatus.DONE
    assert cell_state(run, cell_hash(g, cell)) == CellStatus.STALE
