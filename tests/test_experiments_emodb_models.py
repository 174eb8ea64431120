"""The EmoDB models study (``make emodb`` = ``experiments/emodb/run.py models``), tiny on real data:
4 speakers x 12 clips, 2 speaker folds, 1 epoch. Folds are speaker-disjoint everywhere, every
method is tested on the same speakers, the packaged grid's bundles build, and the seed ensemble
row is recomputed here from the runs' own predictions."""

from __future__ import annotations

import _experiments
import numpy as np
import pandas as pd
import pytest

from avemo.fusion.spec import TaskSpec
from experiments.emodb import study as st
from experiments.emodb.run import run_study

assert _experiments.ROOT
TINY = [
    "--folds",
    "2",
    "--epochs",
    "1",
    "--limit",
    "12",
    "--models",
    "speech_embedding_att",
    "--quiet",
]


def test_models_tiny_speaker_independent(shared_data, tmp_path):
    pytest.importorskip("opensmile", reason="opensmile (benchmark-only dependency) not installed")
    out = tmp_path / "emodb"
    res = run_study(
        [
            "models",
            "--root",
            str(shared_data / "emodb-8spk"),
            "-o",
            str(out),
            *TINY,
            "--speakers",
            "03",
            "08",
            "09",
            "10",
            "--baselines",
            "egemaps",
            "--results",
            str(tmp_path / "results.md"),
        ]
    )
    per_fold, summary = res["per_fold"], res["summary"]
    assert sorted(per_fold["method"].unique()) == ["egemaps_svm", "speech_embedding_att"]
    assert len(per_fold) == 2 * 2  # 2 methods x 2 folds
    for _, r in per_fold.iterrows():
        train, test = set(r["train_speakers"].split()), set(r["test_speakers"].split())
        assert test and train and not train & test, r
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["uar"] <= 1.0
    assert (per_fold.groupby("fold")["test_speakers"].nunique() == 1).all()  # the SAME speakers
    assert set(per_fold["test_speakers"]) == {"03 08", "09 10"}
    assert len(summary) == 2 and (out / "grid" / "folds" / "folds.csv").exists()
    text = (tmp_path / "results.md").read_text()
    assert text.count("|") > 10 and "Reproduce: `python experiments/emodb/run.py models" in text


def test_packaged_grid_bundles_build_and_run() -> None:
    """Every bundle of workflows/grids/emodb.yaml builds from the zoo with the cached row shapes
    (logmel [64], speech_embedding [96]) and gives clip logits in train and eval mode."""
    import torch

    from avemo.fusion.registry import MODELS as ZOO
    from avemo.fusion.registry import load_all

    load_all()
    shapes = {"logmel": (64,), "speech_embedding": (96,)}
    for name, spec in st.load_spec(st.packaged_grid("emodb"))["axes"]["method"].items():
        inputs = {m: shapes[s] for m, s in spec["data.features"].items()}
        cfg = dict(spec["model"])
        model = ZOO.build(cfg.pop("name"), inputs=inputs, task=TaskSpec("clip", 7), **cfg)
        batch = {m: torch.randn(2, 30, *s) for m, s in inputs.items()}
        batch.update(
            {f"{m}_mask": torch.arange(30)[None] < torch.tensor([[30], [12]]) for m in inputs}
        )
        for train in (True, False):
            model.train(train)
            out = model(batch)
            assert out.shape == (2, 7) and torch.isfinite(out).all(), name


def test_models_seeds_and_seed_ensemble(shared_data, tmp_path):
    """--seeds 2 on 2 speakers (1 per fold): each fold has seeds 0 and 1 (trained differently),
    the summary averages them per fold, and the ensemble row scores the mean of the two runs'
    test-clip probabilities, recomputed here from the runs' own predictions."""
    from sklearn.metrics import balanced_accuracy_score

    res = run_study(
        [
            "models",
            "--root",
            str(shared_data / "emodb-8spk"),
            "-o",
            str(tmp_path / "e"),
            *TINY,
            "--speakers",
            "13",
            "16",
            "--baselines",
            "--seeds",
            "2",
        ]
    )  # both act all 7
    per_fold, summary = res["per_fold"], res["summary"]
    single = per_fold[per_fold["method"] == "speech_embedding_att"]
    assert sorted(zip(single["fold"], single["seed"], strict=True)) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    ens = per_fold[per_fold["method"] == "speech_embedding_att_ens2"].set_index("fold")
    assert sorted(ens.index) == [0, 1]
    for fold, g in single.groupby("fold"):
        preds = [
            pd.read_csv(f"{d}/predictions.csv")
            .query("partition == 'test'")
            .set_index("clip_id")
            .sort_index()
            for d in g.sort_values("seed")["run_dir"]
        ]
        pcols = [c for c in preds[0].columns if c.startswith("p_")]
        assert not np.allclose(preds[0][pcols], preds[1][pcols])  # the seed changes training
        mean = (preds[0][pcols].to_numpy() + preds[1][pcols].to_numpy()) / 2
        pred = np.array([c[2:] for c in pcols])[mean.argmax(1)]
        assert ens.loc[fold, "uar"] == pytest.approx(
            balanced_accuracy_score(preds[0]["label"], pred)
        )
        assert set(ens.loc[fold, "test_speakers"].split()).isdisjoint(
            ens.loc[fold, "train_speakers"].split()
        )
    row = summary.set_index("method").loc["speech_embedding_att"]
    assert row["seeds"] == 2 and row["folds"] == 2
    assert row["uar_mean"] == pytest.approx(single.groupby("fold")["uar"].mean().mean())
    assert (
        "ENSEMBLE of 2 seeds" in res["markdown"] and "mean of 2 seeds per fold" in res["markdown"]
    )
