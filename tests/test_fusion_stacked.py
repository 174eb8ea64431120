"""Cells trained together (``fusion.stacked``) equal separate runs; grids stack and claim.

Generated features in the real HDF5 store (``workflows_helpers.make_corpus``); dropout 0, so a
stacked cell must reproduce its separate run (vmap draws dropout masks differently).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from workflows_helpers import make_corpus

from avemo.fusion.config import load_config
from avemo.fusion.stacked import fit_stacked, stack_key, why_not_stackable
from avemo.fusion.train import build_datamodule, fit_and_evaluate
from avemo.workflows.ablation import Claims, dist_env, load_grid, plan_units, run_grid


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root)
    return root


def _cfg(root, seed=0, lr=0.01, temporal=None, **trainer):
    return {
        "name": "st",
        "seed": seed,
        "data": {
            "manifest": str(root / "manifest.csv"),
            "batch_size": 8,
            "features": {
                "face": str(root / "features/face.h5"),
                "audio": str(root / "features/audio.h5"),
            },
        },
        "model": {
            "name": "zhou",
            "temporal": temporal or {"name": "fan_self", "dropout": 0.0},
            "fusion": "concat",
        },
        "optim": {"name": "adam", "lr": lr},
        "trainer": {
            "max_epochs": 5,
            "progress": "none",
            "monitor": "val/accuracy",
            "early_stopping": {"patience": 1},
            **trainer,
        },
        "split": {"method": "official"},
        "output": {"plots": False, "verbose": False},
    }


def _files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


# transformer: separate runs project valid rows only (pack_rows), the stacked model all rows
@pytest.mark.parametrize("temporal", [None, "transformer"], ids=["fan_self", "transformer"])
def test_stacked_run_equals_separate_runs(corpus, tmp_path, temporal):
    cfgs = [
        load_config(_cfg(corpus, 0, temporal=temporal)),
        load_config(_cfg(corpus, 1, temporal=temporal, early_stopping={"patience": 4})),
        load_config(_cfg(corpus, 2, lr=0.2, temporal=temporal)),
    ]
    assert len({stack_key(c) for c in cfgs}) == 1
    dm = build_datamodule(cfgs[0], "cpu", feature_cache={})
    sep = []
    for i, c in enumerate(cfgs):
        dm.seed = c.seed
        sep.append(fit_and_evaluate(c, dm, tmp_path / f"sep{i}", progress=False))
    st = fit_stacked(cfgs, dm, [tmp_path / f"st{i}" for i in range(3)], verbose=False)
    epochs = {len(r["history"]) for r in sep}
    assert min(epochs) < 5 and len(epochs) > 1, "cells must stop early, at different epochs"
    for i, (a, b) in enumerate(zip(sep, st, strict=True)):
        assert _files(tmp_path / f"sep{i}") == _files(tmp_path / f"st{i}")
        assert len(a["history"]) == len(b["history"]) and a["best_epoch"] == b["best_epoch"]
        for ra, rb in zip(a["history"], b["history"], strict=True):
            assert ra.keys() == rb.keys()
            for k in ra:
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), (i, k)
        assert b["metrics"] == pytest.approx(a["metrics"], rel=1e-4, abs=1e-5)
        for name in ("best.pt", "last.pt"):
            wa = torch.load(tmp_path / f"sep{i}/checkpoints/{name}", weights_only=True)
            wb = torch.load(tmp_path / f"st{i}/checkpoints/{name}", weights_only=True)
            assert wa.keys() == wb.keys()
            for k in wa:
                if k.endswith("temporal.k.bias"):
                    # softmax ignores a shift shared by a query's scores: K's bias has zero gradient
                    # in exact arithmetic; Adam scales the rounding noise up to lr-sized steps, so
                    # it differs between any two summation orders and changes no output (checked above)
                    continue
                torch.testing.assert_close(
                    wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}"
                )
        pa = pd.read_csv(tmp_path / f"sep{i}/predictions.csv")
        pb = pd.read_csv(tmp_path / f"st{i}/predictions.csv")
        assert list(pa.columns) == list(pb.columns) and len(pa) == len(pb)
        num = pa.select_dtypes("number").columns
        np.testing.assert_allclose(
            pb[num].to_numpy(float), pa[num].to_numpy(float), rtol=1e-4, atol=1e-5
        )


def test_what_cannot_be_stacked_is_named():
    minimal = {"data": {"manifest": "m.csv", "features": {"a": "a.h5"}}, "model": {"name": "x"}}

    def cfg(**over):
        return load_config({**minimal, **over}, check_args=False)

    base = cfg(trainer={"max_epochs": 3}, schedule={"name": "plateau"})
    assert "plateau" in why_not_stackable(base)
    assert "fast_dev_run" in why_not_stackable(cfg(trainer={"fast_dev_run": True}))
    bn = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert "BatchNorm1d" in why_not_stackable(cfg(), bn)
    assert why_not_stackable(cfg(), torch.nn.Linear(2, 2)) is None


def test_grid_stacks_seeds_and_writes_what_separate_cells_write(corpus, tmp_path):
    tables = {}
    for mode in ("on", "off"):
        g = {
            "name": "s",
            "base": _cfg(corpus),
            "out_dir": str(tmp_path / mode),
            "stack": mode,
            "axes": {"optim.lr": [0.01, 0.05], "seed": [0, 1]},
        }
        grid = load_grid(g)
        units = plan_units(grid, grid.cells(), mode)
        assert [len(u) for u in units] == ([4] if mode == "on" else [1, 1, 1, 1])
        res = run_grid(g, quiet=True, report=False)
        tables[mode] = res["table"].set_index("cell_id")
        for d in (tmp_path / mode / "runs").iterdir():
            rec = json.loads((d / "DONE.json").read_text())
            assert rec["status"] == "done" and (rec.get("stacked") == 4) == (mode == "on")
    a, b = tables["on"], tables["off"]
    assert list(a.columns) == list(b.columns) and sorted(a.index) == sorted(b.index)
    cols = [c for c in a.columns if c.startswith("val/")]
    np.testing.assert_allclose(
        a.loc[b.index, cols].to_numpy(float), b[cols].to_numpy(float), rtol=1e-4, atol=1e-5
    )
    assert _files(tmp_path / "on" / "runs" / a.index[0]) == _files(
        tmp_path / "off" / "runs" / a.index[0]
    )


def test_claims_are_exclusive_and_dead_claims_are_reclaimed(tmp_path):
    mine, other = Claims(tmp_path), Claims(tmp_path)
    assert mine.take("a") and not other.take("a")  # a live process holds it
    mine.release("a")
    assert other.take("a")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "b.claim").write_text(json.dumps({"host": mine.host, "pid": int(dead.stdout)}))
    assert mine.take("b"), "a claim of a process that exited is taken over"
    (tmp_path / "c.claim").write_text(json.dumps({"host": "another-machine", "pid": 1}))
    assert not mine.take("c"), "another machine's claim stands"


def test_slurm_variables_read_like_rank_and_world_size(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    assert dist_env() == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert dist_env() == (3, 8)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert dist_env() == (1, 2)  # torchrun's variables win


def test_resumed_grid_worker_takes_cells_a_first_worker_left(corpus, tmp_path):
    """A second worker started on a half-claimed grid trains only unclaimed cells."""
    g = {
        "name": "r",
        "base": _cfg(corpus, max_epochs=1),
        "out_dir": str(tmp_path / "g"),
        "stack": "off",
        "axes": {"seed": [0, 1, 2]},
    }
    cells = load_grid(g).cells()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        claims = tmp_path / "g" / "claims"
        claims.mkdir(parents=True)
        (claims / f"{cells[0].cell_id}.claim").write_text(
            json.dumps({"host": Claims(claims).host, "pid": holder.pid})
        )
        res = run_grid(g, quiet=True, report=False, rank=1, world_size=2)
        assert (
            res["ran"] == 2
        )  # its own start and the cell rank 0 would have taken; not the held one
        assert not (tmp_path / "g" / "runs" / cells[0].cell_id / "DONE.json").exists()
    finally:
        holder.kill()
        holder.wait()
    res = run_grid(g, quiet=True, report=False)  # the holder is gone: its claim is reclaimed
    assert res["ran"] == 1 and (res["table"]["status"] == "done").all()


def test_auto_stacks_on_a_gpu_only_and_bad_modes_are_refused(corpus, monkeypatch):
    """``auto``: one unit per cell on a CPU (measured faster there), stacked units on CUDA."""
    from avemo.errors import UserError

    g = {"name": "s", "base": _cfg(corpus), "axes": {"optim.lr": [0.01, 0.05], "seed": [0, 1]}}
    grid = load_grid(g)
    assert [len(u) for u in plan_units(grid, grid.cells(), "auto")] == [1, 1, 1, 1]
    monkeypatch.setattr("avemo.fusion.train.trainer_device", lambda acc: ("cuda", "gpu"))
    assert [len(u) for u in plan_units(grid, grid.cells(), "auto")] == [4]
    with pytest.raises(UserError, match="stack: input should be .auto., .on. or .off., got .yes."):
        load_grid({**g, "stack": "yes"})
    monkeypatch.setenv("AVEMO_GRID_STACK", "sometimes")
    with pytest.raises(UserError, match="AVEMO_GRID_STACK: input should be .auto., .on. or .off."):
        run_grid(g, dry_run=True, quiet=True)


def test_stacked_cells_with_dropout_draw_their_own_masks(corpus, tmp_path):
    """With dropout the stacked model draws per-cell masks (vmap refuses shared ones)."""
    cfgs = [
        load_config(_cfg(corpus, s, temporal={"name": "fan_self", "dropout": 0.5}, max_epochs=1))
        for s in (0, 0)
    ]  # the same seed twice: only the dropout masks can tell them apart
    dm = build_datamodule(cfgs[0], "cpu", feature_cache={})
    res = fit_stacked(cfgs, dm, [tmp_path / "a", tmp_path / "b"], verbose=False)
    assert len(res) == 2
    wa = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    wb = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa), "two cells drew the same masks"
