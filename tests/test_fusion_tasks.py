"""Every registered task trains end to end through the real trainer, writes its own prediction
table, and a finished run rebuilt by ``Run.from_dir`` reproduces the run's final scores."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fusion_data import clip_config, clip_corpus, frame_corpus
from _tutorial import load_tutorial_plugin

from avemo.fusion.config import DataConfig, load_config
from avemo.fusion.registry import TASKS, load_all
from avemo.fusion.run import Run
from avemo.fusion.tasks.base import RegressionTask
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


#: a task's shape (level, problem) -> (corpus builder, config overrides): a new task of a shape
#: listed here is tested with no edit; a new shape (e.g. frame classification) needs its corpus
CORPORA = {
    ("clip", "classification"): (clip_corpus, {}),
    ("frame", "regression"): (frame_corpus, {"data": {"window": {"length": 30, "hop": 20}}}),
    ("clip", "regression"): (
        _clip_regression_corpus,
        {"data": {"targets": ["valence", "arousal"]}},
    ),
}


def shape(name: str) -> tuple[str, str]:
    """What a task's test corpus must hold: its level, and classes or regression targets."""
    cls = TASKS.get(name)
    return cls.level, "regression" if issubclass(cls, RegressionTask) else "classification"


@pytest.mark.parametrize("name", TASKS.names())
def test_task_trains_writes_its_predictions_and_the_rebuilt_run_reproduces_them(tmp_path, name):
    check_task_end_to_end(tmp_path, name)


def test_the_tutorials_task_is_one_file(tmp_path, monkeypatch):
    """docs/tutorials/extending.md's `clip_valence3`, loaded from one file with no test edit,
    trains and passes the same end-to-end checks as the built-in tasks."""
    load_tutorial_plugin("clip_valence3", TASKS, tmp_path, monkeypatch)
    assert shape("clip_valence3") == ("clip", "classification")
    check_task_end_to_end(tmp_path, "clip_valence3")


def check_task_end_to_end(tmp_path: Path, name: str) -> None:
    level, problem = shape(name)
    assert (level, problem) in CORPORA, (
        f"task {name!r} is a {level} {problem} task, a shape no corpus in CORPORA has"
    )
    build, over = CORPORA[level, problem]
    c = build(tmp_path)
    cfg = load_config(
        clip_config(c, tmp_path, task={"type": name}, trainer={"max_epochs": 4}, **over)
    )
    res = train_from_config(cfg, run_dir=tmp_path / "run")
    task = TASKS.get(name)(cfg.data)
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
        for k, v in run.task.score(run.predictions("test"), cfg.eval).items()
        if isinstance(v, float)
    }
    for k, v in again.items():
        assert v == pytest.approx(res["metrics"][k], abs=1e-6), k
    plots = sorted(p.name for p in (tmp_path / "run" / "plots").glob("*.png"))
    assert "learning_curves.png" in plots and len(plots) >= 2  # + the task's own plot(s)

    # the model was built from the task's frozen spec, which says what data_report recorded
    spec = run.task.spec(run.modalities)
    described = report["task"]
    assert run.model.task == spec and (spec.level, spec.n_out) == (task.level, described["n_out"])
    assert list(spec.classes or spec.targets) == described.get("classes", described.get("targets"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.n_out = 1  # type: ignore[misc]  # frozen: what the test checks

    # the grid report asks the run's own task (read from its folder) for its figures
    from avemo.workflows.report import report_figures

    figs = report_figures([tmp_path / "run"], "cfg", tmp_path / "report" / "cfg")
    assert len(figs) == 1 and figs[0].stat().st_size > 0
    if "classes" in described:  # the summed confusion counts the test rows, as sklearn does
        from sklearn.metrics import confusion_matrix

        assert figs[0].name == "confusion_cfg.png"
        table = pd.read_csv(res["predictions"])
        test = table[table["partition"] == "test"]
        want = confusion_matrix(test["label"], test["pred"], labels=described["classes"])
        np.testing.assert_array_equal(run.task.test_confusion(tmp_path / "run"), want)
    else:
        assert figs[0].name == "cfg_test.png"


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


#: ways of asking which task it is: the level compared, the classes / targets probed
TASK_BRANCHES = re.compile(
    r"""task_type|\blevel\s*[!=]=|[!=]=\s*["'](?:frame|clip)["']|["'](?:frame|clip)["']\s*[!=]="""
    r"""|task\[["']type["']\]|hasattr\([^)]*["'](?:classes|targets)["']"""
)
#: where the task levels are defined (the tasks and the spec models receive)
TASK_HOMES = ("fusion/tasks/", "fusion/spec.py")


def package_files() -> list[str]:
    """Every .py file of the installed package: the folders of setup.py's ``ROOTS``."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text())
    roots = next(
        n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.targets[0].id == "ROOTS"
    )
    folders = sorted(set(ast.literal_eval(roots).values()))
    return sorted(str(p.relative_to(REPO)) for f in folders for p in (REPO / f).rglob("*.py"))


def test_the_task_branch_pattern_catches_the_ways_code_asks_which_task():
    for text in (
        'if task.level == "frame":',
        'frame = dm.task_type == "frame"',
        'if "clip" == kind:',
        'elif hasattr(task, "classes"):',
        'if self.task["type"] == "clip":',
        "if spec.level != 'clip':",
    ):
        assert TASK_BRANCHES.search(text), text
    for text in ('if err["type"] == "missing":', "return self.task.frame", 'cfg["task"]["type"]'):
        assert not TASK_BRANCHES.search(text), text


def test_nothing_outside_the_tasks_branches_on_the_task_type():
    """Trainer, module, datamodule, evaluation, predict, report, merge, grids, models and every
    other module of the package ask the task object (or the spec) instead."""
    files = package_files()
    assert "fusion/predict.py" in files and "workflows/report.py" in files
    offenders = []
    for rel in files:
        if rel.startswith(TASK_HOMES):
            continue
        for n, line in enumerate((REPO / rel).read_text().splitlines(), 1):
            if TASK_BRANCHES.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_avemo_predict_prints_the_run_tasks_line_per_clip():
    """Frame regression: each target's mean over the clip's frames; classification: the class
    and its probability (no per-class columns). The task says which, not the columns."""
    from avemo.workflows.predict import summary

    data = {"manifest": "m.csv", "features": {"face": "f.h5"}}
    frame = TASKS.get("frame")(DataConfig(**data, targets=["valence"]))
    table = pd.DataFrame(
        {
            "clip_id": ["a", "a", "b"],
            "time": [0.0, 0.1, 0.0],
            "valence": [0.2, 0.5, -1.0],
            "face_present": [True, True, False],
            "missing": ["", "", "face"],
            "flagged": [False, False, True],
        }
    )
    head, a, b = summary(table, frame).splitlines()
    assert head.split() == ["clip_id", "valence", "missing", "flagged"]
    assert a.split() == ["a", f"{np.mean([0.2, 0.5]):.3f}", "False"]
    assert b.split() == ["b", "-1.000", "face", "True"]

    clip = TASKS.get("clip")(DataConfig(**data))
    clip.classes = ["x", "y"]
    table = pd.DataFrame(
        {"clip_id": ["a"], "pred": ["y"], "top_p": [0.75], "p_x": [0.25], "p_y": [0.75]}
    ).assign(missing="")
    assert summary(table, clip).splitlines()[0].split() == ["clip_id", "pred", "top_p", "missing"]
