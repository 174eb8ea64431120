"""The ready grids in workflows/grids/ parse, expand to the documented cell counts, and every
cell's config resolves (load_config validates keys and choices) -- without any data."""

from __future__ import annotations

from pathlib import Path

import pytest

from avemo.fusion.config import load_config
from avemo.workflows.ablation import GridError, load_grid, run_grid

GRIDS = Path(__file__).resolve().parents[1] / "workflows" / "grids"
EXPECTED = {"zhou.yaml": 72, "va_lfan_jca.yaml": 36, "demo.yaml": 12, "emodb.yaml": 36}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ready_grid_resolves(name):
    g = load_grid(GRIDS / name)
    cells = g.cells()
    assert len(cells) == EXPECTED[name]
    models = set()
    for c in cells:
        cfg = load_config(g.base, c.override_args(g.overrides))
        models.add(cfg.model.name)
        assert cfg.data.features, c.cell_id
    assert models  # e.g. {"lfan", "jca", "late"} for the valence-arousal grid
    if name == "va_lfan_jca.yaml":
        assert models == {"lfan", "jca", "late"}


def test_dry_run_lists_missing_cache_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no features/ here: every cell is reported, nothing runs
    res = run_grid(GRIDS / "zhou.yaml", out_dir=tmp_path / "out", dry_run=True, quiet=True)
    assert len(res["table"]) == 72
    assert all(p for p in res["problems"].values())
    assert not (tmp_path / "out").exists()


def test_every_packaged_grid_is_listed_here():
    assert {p.name for p in GRIDS.glob("*.yaml")} == set(EXPECTED)


def test_unknown_grid_key_is_refused_with_a_suggestion(tmp_path):
    with pytest.raises(GridError, match="^axis: unknown key, did you mean axes"):
        load_grid({"base": str(GRIDS.parent / "configs" / "demo_fbp.yaml"), "axis": {"seed": [0]}})


def test_emodb_grid_labels_every_variant():
    g = load_grid(GRIDS / "emodb.yaml")
    methods = {c.labels["method"] for c in g.cells()}
    assert set(g.labels["method"]) == methods and len(methods) == 9
