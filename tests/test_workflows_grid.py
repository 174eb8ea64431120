"""Ablation grids end to end with the real trainer on generated features in the real HDF5
store: cells -> table -> aggregate -> report, features missing up front, resume after killing a
real ``avemo ablate``, cells shared by 2 processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml
from workflows_helpers import make_corpus

from avemo.workflows.ablation import GridError, load_grid, run_grid

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root)
    return root


def _base(root: Path, **extra) -> Path:
    cfg = {
        "data": {
            "manifest": str(root / "manifest.csv"),
            "features": {
                "face": str(root / "features/face.h5"),
                "audio": str(root / "features/audio.h5"),
            },
        },
        "model": {"name": "zhou", "temporal": "fan_self", "fusion": "concat"},
        "optim": {"lr": 0.01},
        "trainer": {"max_epochs": 3},
        "split": {"method": "official"},
        "data_extra": {},
    }
    cfg.pop("data_extra")
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    p = root / f"base_{abs(hash(json.dumps(extra, sort_keys=True)))}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _grid(root: Path, out: Path, **kw) -> dict:
    g = {
        "name": "t",
        "base": str(_base(root, **kw.pop("base_extra", {}))),
        "out_dir": str(out),
        "axes": {
            "model.temporal": ["mean", "fan_self"],
            "model.fusion": ["concat", "fbp"],
            "seed": [0, 1],
        },
    }
    g.update(kw)
    return g


def _png_ok(path: Path) -> None:
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert float(np.ptp(img[..., :3])) > 0.1, f"{path} is a blank image"


def test_grid_table_aggregate_report(corpus, tmp_path, monkeypatch, capsys):
    from avemo.data.store import FeatureFile

    reads: list[str] = []  # every full read of a feature file's rows, by path
    load_all = FeatureFile.load_all

    def counting_load_all(self, *a, **k):
        reads.append(self.path.resolve().name)
        return load_all(self, *a, **k)

    monkeypatch.setattr(FeatureFile, "load_all", counting_load_all)
    out = tmp_path / "grid"
    res = run_grid(_grid(corpus, out), quiet=True)
    table, agg = res["table"], res["aggregate"]
    assert len(table) == 2 * 2 * 2 and (table["status"] == "done").all()
    assert set(table.columns) >= {
        "cell_id",
        "config_id",
        "model.temporal",
        "model.fusion",
        "seed",
        "test/accuracy",
        "test/uar",
    }
    assert len(agg) == 4 and (agg["n"] == 2).all()  # aggregated over the 2 seeds
    for _, row in agg.iterrows():
        runs = table.loc[table["config_id"] == row["config_id"], "test/uar"]
        assert row["test/uar_mean"] == pytest.approx(runs.mean())
        assert row["test/uar_std"] == pytest.approx(runs.std(ddof=1))
    for f in ("results.csv", "results.parquet", "aggregate.csv", "aggregate.parquet", "report.md"):
        assert (out / f).exists(), f
    assert len(pd.read_parquet(out / "results.parquet")) == 8
    md = (out / "report.md").read_text()
    pngs = sorted((out / "plots").glob("*.png"))
    assert any(p.name.startswith("bar_test_uar") for p in pngs)
    assert any(p.name.startswith("confusion_") for p in pngs)
    assert any(p.name.startswith("attention_") for p in pngs)  # FAN self-attention over frames
    for p in pngs:
        _png_ok(p)
        assert f"plots/{p.name}" in md
    # the features were read once for the whole grid (shared cache), not once per run: 8 cells,
    # each HDF5 file's rows read exactly once
    assert sorted(reads) == ["audio.h5", "face.h5"], reads
    # `avemo report` redraws it from the tables the grid wrote (results.csv + aggregate.csv)
    from avemo.cli import main as cli
    from avemo.workflows.report import write_report

    assert write_report(out).read_text() == md
    (out / "aggregate.csv").unlink()
    capsys.readouterr()
    assert cli(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip()  # one line naming the missing table, no traceback
    assert err.startswith("avemo report: error:") and "aggregate.csv" in err and "\n" not in err


def test_missing_and_mismatched_features_reported_before_any_run(corpus, tmp_path):
    out = tmp_path / "grid"
    g = _grid(corpus, out)
    g["axes"] = {
        "inputs": {
            "both": {},
            "gone": {"data.features.audio": str(tmp_path / "nope.h5")},
            "wrong": {"data.expect.face": {"feature_set": "other_set"}},
        }
    }
    with pytest.raises(GridError, match="nope.h5"):
        run_grid({**g, "on_missing": "error"}, quiet=True)
    assert not (out / "runs").exists(), (
        "no cell may start when features are missing and on_missing=error"
    )
    with pytest.raises(GridError, match="nope.h5"):  # the dry run refuses what the run would
        run_grid({**g, "on_missing": "error"}, dry_run=True, quiet=True)
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    plan = run_grid(g, dry_run=True, quiet=True)
    probs = plan["problems"]
    assert probs["inputs=both"] == []
    assert "not in the cache" in probs["inputs=gone"][0]
    assert "feature_set" in probs["inputs=wrong"][0] and "other_set" in probs["inputs=wrong"][0]
    res = run_grid(g, quiet=True)
    st = dict(zip(res["table"]["cell_id"], res["table"]["status"], strict=True))
    assert st == {
        "inputs=both": "done",
        "inputs=gone": "missing_features",
        "inputs=wrong": "missing_features",
    }


def test_command_line_overrides_reach_every_cell_and_axis_keys_are_refused(corpus, tmp_path):
    """`avemo ablate -g GRID key=value`: a corpus is one override (the features folder and set
    names), not an edit of the grid; a key an axis varies is refused, not silently lost."""
    from avemo.workflows.ablation import resolve_cell_config

    g = _grid(corpus, tmp_path / "grid")
    base = yaml.safe_load(Path(g["base"]).read_text())
    base["data"]["features"] = {"face": "face", "audio": "audio"}  # set names, no folder yet
    base["data"]["features_dir"] = str(tmp_path / "elsewhere")
    g["base"] = str(tmp_path / "base.yaml")
    Path(g["base"]).write_text(yaml.safe_dump(base))
    grid = load_grid(g)
    plan = run_grid(
        grid,
        dry_run=True,
        quiet=True,
        overrides=[f"data.features_dir={corpus / 'features'}", "trainer.max_epochs=1"],
    )
    assert all(p == [] for p in plan["problems"].values()), plan["problems"]  # the corpus's files
    for cell in grid.cells():
        cfg = resolve_cell_config(grid, cell)
        assert cfg.data.features == {
            "face": str(corpus / "features/face.h5"),
            "audio": str(corpus / "features/audio.h5"),
        }
        assert cfg.trainer.max_epochs == 1
    with pytest.raises(GridError, match="model.fusion, which a grid axis varies"):
        run_grid(load_grid(g), dry_run=True, quiet=True, overrides=["model.fusion.k=3"])


def test_a_set_name_needs_a_features_folder():
    from avemo.fusion.config import ConfigError, load_config

    cfg = {
        "data": {"manifest": "m.csv", "features": {"audio": "logmel", "face": "/abs/face.h5"}},
        "model": {"name": "unimodal"},
    }
    with pytest.raises(
        ConfigError, match="data.features.audio=logmel names a feature set.*data.features_dir"
    ):
        load_config(cfg)
    got = load_config(
        {**cfg, "data": {**cfg["data"], "features_dir": "/feats/ravdess"}}
    ).data.features
    assert got == {"audio": "/feats/ravdess/logmel.h5", "face": "/abs/face.h5"}


def test_grid_yaml_axes_forms(corpus, tmp_path):
    gpath = tmp_path / "g.yaml"
    gpath.write_text(
        yaml.safe_dump(
            {
                "base": str(_base(corpus)),
                "axes": {
                    "seed": [0, 1, 2],
                    "lr": {"key": "optim.lr", "values": [0.1, 0.01]},
                    "bundle": {
                        "a": {"trainer.max_epochs": 1},
                        "b": {"trainer.max_epochs": 2, "optim.name": "adam"},
                    },
                },
                "cv": {"method": "subjects", "k": 3},
            },
            sort_keys=False,
        )
    )
    g = load_grid(gpath)
    cells = g.cells()
    assert len(cells) == 3 * 2 * 2 * 3
    c = next(c for c in cells if c.labels == {"seed": "1", "lr": "0.1", "bundle": "b", "fold": "2"})
    assert c.overrides["optim.lr"] == 0.1 and c.overrides["trainer.max_epochs"] == 2
    assert c.overrides["split.method"] == "subjects" and c.overrides["split.fold"] == 2
    assert c.config_id == "lr=0.1__bundle=b"
    clash = {"base": str(_base(corpus)), "axes": {"lr": [0.1], "b": {"x": {"lr": 0.2}}}}
    with pytest.raises(GridError, match="both set lr"):
        load_grid(clash).cells()
    with pytest.raises(GridError, match="axes.bad: must be a list"):
        load_grid({"base": str(_base(corpus)), "axes": {"bad": 3}})


def _wait_done(runs: Path, n: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    t0 = time.monotonic()
    while len(list(runs.glob("*/DONE.json"))) < n:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
        assert time.monotonic() - t0 < timeout, "grid made no progress"
        time.sleep(0.05)


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def test_resume_after_killing_a_real_avemo_ablate(corpus, tmp_path):
    out = tmp_path / "grid"
    gpath = tmp_path / "g.yaml"
    g = _grid(corpus, out, base_extra={"trainer": {"max_epochs": 4}})
    g["axes"] = {"seed": [0, 1, 2, 3, 4, 5]}
    g["stack"] = "off"  # one cell at a time, so the kill lands between cells
    gpath.write_text(yaml.safe_dump(g))
    proc = subprocess.Popen(
        [str(VENV_BIN / "avemo"), "ablate", "-g", str(gpath)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        _wait_done(out / "runs", 2, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/DONE.json")}
    assert 2 <= len(done_before) < 6, "the kill must land mid-grid"
    res = run_grid(gpath, quiet=True)
    assert res["ran"] == 6 - len(done_before)
    assert (res["table"]["status"] == "done").all() and len(res["table"]) == 6
    for name, mtime in done_before.items():  # finished cells were not rerun
        assert (out / "runs" / name / "DONE.json").stat().st_mtime_ns == mtime


def test_two_processes_share_the_cells_and_merge_one_table(corpus, tmp_path):
    """``workers: 2``: this process is rank 0, a spawned ``python -m avemo.workflows.ablate``
    with RANK=1 WORLD_SIZE=2 claims cells too (plain env, as under torchrun); every cell is
    trained exactly once, by whichever worker claimed it first."""
    out = tmp_path / "grid"
    g = _grid(corpus, out, workers=2)
    g["axes"] = {"model.fusion": ["concat", "fbp"], "seed": [0, 1, 2]}
    res = run_grid(g, quiet=True, report=False)
    shards = {
        json.loads(p.read_text())["rank"]: json.loads(p.read_text())["ran"]
        for p in (out / "shards").glob("*.json")
    }
    assert set(shards) == {0, 1} and sum(shards.values()) == 6  # no cell trained twice
    assert res["ran"] == shards[0]
    assert not list((out / "claims").glob("*.claim"))  # every claim released
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 6 and (table["status"] == "done").all()
    assert res["table"]["run_dir"].map(lambda d: (Path(d) / "DONE.json").exists()).all()


def test_shared_datamodule_runs_equal_standalone_runs(corpus, tmp_path):
    from avemo.fusion.grid_trainer import SharedDataTrainer
    from avemo.fusion.train import train_from_config

    base = _base(corpus)
    shared = SharedDataTrainer()
    cache: dict = {}
    for seed in (0, 1):  # seed 1 reuses the datamodule prepared for seed 0
        got = shared(
            str(base), [f"seed={seed}"], feature_cache=cache, run_dir=tmp_path / f"s{seed}"
        )
    assert len(shared._dms) == 1
    alone = train_from_config(str(base), ["seed=1"], run_dir=tmp_path / "alone")
    assert got["metrics"] == pytest.approx(alone["metrics"], abs=1e-6)
    a = pd.read_csv(tmp_path / "s1" / "predictions.csv")
    b = pd.read_csv(tmp_path / "alone" / "predictions.csv")
    pd.testing.assert_frame_equal(a, b, atol=1e-5)


def test_param_group_prefix_naming_no_module_stops_the_grid_dry_run_included(corpus, tmp_path):
    """``optim.groups`` is checked against the model each cell builds before any cell trains: a
    prefix naming no module (here in one bundle) stops the grid, which writes nothing."""
    out = tmp_path / "grid"
    ok = {"optim.groups": {"branches.face": {"weight_decay": 0.0}}}
    typo = {"optim.groups": {"branches.fcae": {"weight_decay": 0.0}}}
    g = _grid(corpus, out, axes={"groups": {"ok": ok, "typo": typo}})
    for dry in (True, False):
        with pytest.raises(GridError, match=r"optim\.groups\.branches\.fcae.*branches\.face"):
            run_grid(g, dry_run=dry, quiet=True)
        assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    g["axes"]["groups"].pop("typo")
    plan = run_grid(g, dry_run=True, quiet=True)["table"]
    assert list(plan["problems"]) == [""]
