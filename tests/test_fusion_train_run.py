"""End-to-end training from real small HDF5 feature files with zoo models; run-folder outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from _fusion_data import clip_config, clip_corpus, frame_corpus

from avemo.fusion.config import ConfigError, load_config
from avemo.fusion.module import jca_reference_lr
from avemo.fusion.train import train_from_config

ZHOU_FBP = {"name": "zhou", "temporal": "fan_self", "fusion": {"name": "fbp", "k": 2, "o": 16}}


@pytest.fixture(scope="module")
def clip_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clip")
    return tmp, clip_corpus(tmp)


@pytest.fixture(scope="module")
def frame_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frame")
    return tmp, frame_corpus(tmp, n_clips=6)


def test_fast_dev_run_clip_task_writes_every_output(clip_data):
    tmp, c = clip_data
    cfg = clip_config(c, tmp, model=ZHOU_FBP, trainer={"fast_dev_run": True})
    res = train_from_config(cfg)
    rd = res["run_dir"]
    for name in (
        "config.yaml",
        "features.json",
        "data_report.json",
        "splits.json",
        "folds.csv",
        "metrics.csv",
        "predictions.csv",
        "final_metrics.json",
        "plots/learning_curves.png",
        "plots/confusion_test.png",
        "checkpoints/last.pt",
    ):
        assert (rd / name).exists(), name
    resolved = yaml.safe_load((rd / "config.yaml").read_text())
    assert resolved["model"]["name"] == "zhou" and resolved["data"]["window"]["length"] == 300
    feats = json.loads((rd / "features.json").read_text())
    assert feats["face"]["provenance"]["feature_set"] == "face_test"
    state = torch.load(rd / "checkpoints" / "last.pt", weights_only=True)
    assert any(k.startswith("fusion.") for k in state)
    preds = pd.read_csv(res["predictions"])
    assert set(preds["partition"]) == {"val", "test"} and {"p_angry", "p_happy", "p_sad"} <= set(
        preds.columns
    )
    np.testing.assert_allclose(preds[["p_angry", "p_happy", "p_sad"]].sum(axis=1), 1.0, rtol=1e-5)
    assert {"val/accuracy", "val/uar", "val/macro_f1", "test/accuracy"} <= set(res["metrics"])


def test_clip_training_learns_and_is_reproducible(clip_data):
    tmp, c = clip_data
    cfg = clip_config(
        c,
        tmp,
        model=ZHOU_FBP,
        trainer={"max_epochs": 6},
        loss={"label_smoothing": 0.1, "class_weights": "balanced"},
        schedule={"name": "cosine"},
    )
    a = train_from_config(cfg)
    b = train_from_config(cfg)
    assert a["metrics"] == b["metrics"]
    sa = torch.load(a["run_dir"] / "checkpoints" / "best.pt", weights_only=True)
    sb = torch.load(b["run_dir"] / "checkpoints" / "best.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["metrics"]["val/accuracy"] >= 0.8  # classes are well separated in this corpus
    hist = pd.read_csv(a["run_dir"] / "metrics.csv")
    assert len(hist) == 6 and hist["lr"].iloc[-1] < hist["lr"].iloc[0]  # cosine decay
    other = train_from_config(cfg, ["seed=5"])
    so = torch.load(other["run_dir"] / "checkpoints" / "last.pt", weights_only=True)
    assert not all(torch.equal(sa[k], so[k]) for k in sa)


def test_modality_dropout_and_missing_modality_evaluation(clip_data):
    tmp, c = clip_data
    cfg = clip_config(
        c,
        tmp,
        model={"name": "late"},
        trainer={"max_epochs": 2},
        data={"modality_dropout": 0.5, "eval_missing": ["audio"]},
    )
    res = train_from_config(cfg)
    m = res["metrics"]
    assert "test/accuracy@missing-audio" in m and "test/accuracy" in m


def test_frame_task_trains_with_windows_and_writes_frame_predictions(frame_data):
    tmp, c = frame_data
    cfg = clip_config(
        c,
        tmp,
        task={"type": "frame"},
        model={"name": "lfan", "visual_channels": [8, 8], "audio_channels": [4, 4]},
        data={"window": {"length": 30, "hop": 20}, "batch_size": 4},
        trainer={"max_epochs": 3},
        eval={"smooth": {"valence": 5}, "clip_range": [-1, 1]},
        schedule={"name": "plateau", "patience": 1},
    )
    res = train_from_config(cfg)
    m = res["metrics"]
    assert {
        "val/ccc",
        "val/ccc_valence",
        "val/pcc_arousal",
        "val/rmse_valence",
        "val/ccc_valence_smoothed",
        "test/ccc",
    } <= set(m)
    pred = pd.read_parquet(res["predictions"])
    ann = pd.read_csv(c["manifest"]).set_index("clip_id")["annotation"]
    for cid, grp in pred.groupby("clip_id"):  # one prediction per label frame, labels carried over
        truth = pd.read_csv(tmp / ann[cid])
        assert len(grp) == len(truth)
        np.testing.assert_allclose(
            grp["arousal_true"].to_numpy(), truth["arousal"].to_numpy(), rtol=1e-6
        )
    assert (res["run_dir"] / "plots" / "traces_test.png").exists()


def test_config_overrides_and_errors(clip_data):
    tmp, c = clip_data
    cfg = load_config(
        clip_config(c, tmp),
        [
            "trainer.max_epochs=7",
            "data.features.face=/x/f.h5",
            "data.timeline={method: linear}",
            "optim.lr=1e-4",
        ],
    )
    assert cfg.trainer.max_epochs == 7 and cfg.data.features["face"] == "/x/f.h5"
    assert cfg.data.timeline.method == "linear" and cfg.optim.lr == 1e-4
    assert cfg.data.window.model_dump() == {"length": 300, "hop": 200}  # defaults survive
    with pytest.raises(
        ConfigError, match="model.fusion: unknown option"
    ):  # not a tiny-model option
        load_config(clip_config(c, tmp), ["model.fusion={name: fbp, k: 3}"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(clip_config(c, tmp), ["trainer.max_epochs"])
    with pytest.raises(ConfigError, match="split.method"):
        load_config(clip_config(c, tmp), ["split.method=random"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp / "nope.yaml")


def test_jca_reference_schedule_values():
    # the released train.py (JCA f1f0a0c): config lr 1e-4 until `epoch > 5`, then 1e-3 * 0.8^((e-5)//2)
    lrs = [jca_reference_lr(e) for e in range(11)]
    assert lrs[:6] == [1e-4] * 6
    np.testing.assert_allclose(lrs[6:], [1e-3, 8e-4, 8e-4, 6.4e-4, 6.4e-4])


def test_grid_style_reuse_of_one_datamodule(clip_data, tmp_path):
    from avemo.fusion.train import build_datamodule, fit_and_evaluate

    tmp, c = clip_data
    base = load_config(clip_config(c, tmp, trainer={"max_epochs": 1}))
    dm = build_datamodule(base, "cpu", feature_cache={})
    out = []
    for fusion in ("concat", "fbp"):
        cfg = load_config(base, [f"model={{name: zhou, fusion: {fusion}}}"])
        res = fit_and_evaluate(cfg, dm, tmp_path / fusion)
        out.append(res)
        assert (tmp_path / fusion / "config.yaml").exists() and (
            tmp_path / fusion / "folds.csv"
        ).exists()
        assert (
            yaml.safe_load((tmp_path / fusion / "config.yaml").read_text())["model"]["fusion"]
            == fusion
        )
    assert all("val/accuracy" in r["metrics"] for r in out)
