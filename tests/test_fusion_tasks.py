"""Every registered task trains end to end through the real trainer, writes its own prediction
table, and a finished run rebuilt by ``Run.from_dir`` reproduces the run's final scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fusion_data import clip_config, clip_corpus, frame_corpus

from avemo.fusion.registry import TASKS, load_all
from avemo.fusion.run import Run
from avemo.fusion.train import train_from_config

load_all()
REPO = Path(__file__).resolve().parents[1]


def _clip_regression_corpus(tmp: Path) -> dict:
    """The clip corpus with clip-level valence/arousal that follow the class (learnable)."""
    c = clip_corpus(tmp)
    man = pd.read_csv(c["manifest"])
    rng = np.random.default_rng(0)
    y = man["label"].astype("category").cat.codes.to_numpy()
    man["valence"] = (y - 1) * 0.5 + rng.normal(scale=0.05, size=len(man))
    man["arousal"] = -(y - 1) * 0.4 + rng.normal(scale=0.05, size=len(man))
    man.loc[0, "arousal"] = np.nan  # an unlabelled clip is left out, with a note
    man.to_csv(c["manifest"], index=False)
    return c


CORPORA = {  # task name -> (corpus builder, config overrides)
    "clip": (clip_corpus, {}),
    "frame": (frame_corpus, {"data": {"window": {"length": 30, "hop": 20}}}),
    "clip_regression": (_clip_regression_corpus, {"data": {"targets": ["valence", "arousal"]}}),
}


@pytest.mark.parametrize("name", TASKS.names())
def test_task_trains_writes_its_predictions_and_the_rebuilt_run_reproduces_them(tmp_path, name):
    assert name in CORPORA, f"task {name!r} is registered but has no test corpus here"
    build, over = CORPORA[name]
    c = build(tmp_path)
    cfg = clip_config(c, tmp_path, task={"type": name}, trainer={"max_epochs": 4}, **over)
    res = train_from_config(cfg, run_dir=tmp_path / "run")
    task = TASKS.get(name)(cfg["data"])
    assert Path(res["predictions"]).name == task.prediction_file
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert final["monitor"] == task.default_monitor
    assert np.isfinite(res["metrics"][task.default_monitor.replace("val/", "test/")])
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["task"]["type"] == name

    run = Run.from_dir(tmp_path / "run")
    assert run.task.name == name
    again = {
        f"test/{k}": v
        for k, v in run.task.score(run.predictions("test"), cfg.get("eval")).items()
        if isinstance(v, float)
    }
    for k, v in again.items():
        assert v == pytest.approx(res["metrics"][k], abs=1e-6), k
    plots = sorted(p.name for p in (tmp_path / "run" / "plots").glob("*.png"))
    assert "learning_curves.png" in plots and len(plots) >= 2  # + the task's own plot(s)


def test_clip_regression_merges_fold_tables_per_clip(tmp_path):
    c = _clip_regression_corpus(tmp_path)
    cfg = clip_config(c, tmp_path, task={"type": "clip_regression"}, trainer={"max_epochs": 2})
    tables = []
    for seed in (0, 1):
        cfg["seed"] = seed
        train_from_config(cfg, run_dir=tmp_path / f"s{seed}")
        run = Run.from_dir(tmp_path / f"s{seed}")
        tables.append(
            run.task.prediction_table(run.predictions("test"), "test").drop(columns="partition")
        )
    merged, scores = run.task.merge(tables, "mean")
    assert len(merged) == len(tables[0]) and set(scores["what"]) >= {"fold 0", "fold 1", "mean raw"}
    want = (
        tables[0].set_index("clip_id")["valence_pred"]
        + tables[1].set_index("clip_id")["valence_pred"]
    ) / 2
    got = merged.set_index("clip_id")["valence_pred"]
    np.testing.assert_allclose(got.loc[want.index], want.clip(-1, 1), rtol=1e-6)


def test_nothing_outside_the_tasks_branches_on_the_task_type():
    """Trainer, module, datamodule, evaluation, report and merge ask the task object instead."""
    offenders = []
    for rel in (
        "fusion/train.py",
        "fusion/module.py",
        "fusion/datamodule.py",
        "fusion/evaluate.py",
        "fusion/index.py",
        "fusion/features.py",
        "fusion/plots.py",
        "fusion/run.py",
        "workflows/report.py",
        "workflows/merge.py",
        "workflows/ablate.py",
        "workflows/crossval.py",
    ):
        text = (REPO / rel).read_text()
        for pat in ("task_type ==", "task_type !=", '== "frame"', '== "clip"', '["type"] =='):
            if pat in text:
                offenders.append(f"{rel}: {pat}")
    assert offenders == []
