"""Fold merging: CCC centering against a hand-computed example, plain averaging, smoothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avemo.workflows.merge import ccc, ccc_centering, merge_frame_predictions, plain_average, smooth

# Three fold models predicting the same 3 frames.
X1 = [0.0, 0.2, 0.4]  # mean 0.2, population variance 0.08/3
X2 = [0.1, 0.3, 0.5]  # mean 0.3, variance 0.08/3
X3 = [0.2, 0.6, 1.0]  # mean 0.6, variance 0.32/3


def test_ccc_hand_values():
    # CCC(x1, x2) = 2 cov / (v1 + v2 + (m1 - m2)^2) = (0.16/3) / (0.16/3 + 0.01) = 16/19
    assert ccc(np.array(X1), np.array(X2)) == pytest.approx(16 / 19)
    # cov13 = 0.16/3, v1 + v3 = 0.4/3, (0.2 - 0.6)^2 = 0.16 -> (0.32/3) / (0.4/3 + 0.16) = 4/11
    assert ccc(np.array(X1), np.array(X3)) == pytest.approx(4 / 11)
    # (0.32/3) / (0.4/3 + 0.09) = 32/67
    assert ccc(np.array(X2), np.array(X3)) == pytest.approx(32 / 67)


def test_ccc_centering_hand_computed():
    g1 = (16 / 19 + 4 / 11) / 2  # agreement of fold 1 with the others
    g2 = (16 / 19 + 32 / 67) / 2
    g3 = (4 / 11 + 32 / 67) / 2
    w = (0.2 * g1 + 0.3 * g2 + 0.6 * g3) / (g1 + g2 + g3)  # = 0.33915...
    # centred folds: [-.2, 0, .2], [-.2, 0, .2], [-.4, 0, .4] -> mean [-0.8/3, 0, 0.8/3]
    expected = np.array([-0.8 / 3, 0.0, 0.8 / 3]) + w
    assert w == pytest.approx(0.339149, abs=1e-6)
    got = ccc_centering([X1, X2, X3])
    np.testing.assert_allclose(got, expected, atol=1e-9)
    # plain averaging of the same folds, for contrast
    np.testing.assert_allclose(plain_average([X1, X2, X3]), [0.1, 1.1 / 3, 1.9 / 3], atol=1e-12)


def test_ccc_centering_clips_and_single_fold():
    np.testing.assert_allclose(ccc_centering([[0.5, 2.0, -3.0]]), [0.5, 1.0, -1.0])
    with pytest.raises(ValueError, match="folds, frames"):
        ccc_centering([0.1, 0.2])


def test_smoothing_stays_inside_each_clip():
    v = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    s = smooth(v, groups, 3)
    np.testing.assert_allclose(s, v)  # a filter over the boundary would blur frames 2 and 3
    s2 = smooth(np.array([0.0, 3.0, 0.0]), np.array(["a"] * 3), 3)
    np.testing.assert_allclose(
        s2, [1.0, 1.0, 1.0]
    )  # 'nearest' edges: (0+0+3)/3, (0+3+0)/3, (3+0+0)/3


def test_merge_frame_predictions_reports_raw_and_smoothed():
    rng = np.random.default_rng(0)
    n = 120
    t = np.arange(n)
    truth = 0.6 * np.sin(t / 9.0)
    key = pd.DataFrame(
        {"clip_id": ["c1"] * 60 + ["c2"] * 60, "time": np.r_[np.arange(60), np.arange(60)] / 30}
    )
    folds = []
    for bias in (0.0, 0.1, -0.4):  # the third fold is biased: centering removes it
        df = key.copy()
        df["valence_pred"] = truth + bias + rng.normal(0, 0.2, n)
        df["valence_true"] = truth
        folds.append(df.sample(frac=1.0, random_state=1))  # row order differs per fold
    merged, scores = merge_frame_predictions(folds, ["valence"], smooth_frames={"valence": 9})
    assert list(merged.columns[:2]) == ["clip_id", "time"] and len(merged) == n
    s = scores.set_index("what")["ccc"]
    assert set(s.index) == {
        "fold 0",
        "fold 1",
        "fold 2",
        "ccc_centering raw",
        "ccc_centering smoothed",
    }
    assert s["ccc_centering raw"] > s["fold 2"]
    assert s["ccc_centering smoothed"] > s["ccc_centering raw"]  # noise removed, signal kept
    with pytest.raises(ValueError, match="lacks predictions"):
        merge_frame_predictions([folds[0], folds[1].iloc[:50]], ["valence"])


def test_cross_validated_lfan_folds_merged_on_the_held_out_test_clips(tmp_path):
    """6-fold-style CV (here 3 folds) over the train pool, then the fold models predict the
    official test clips and are merged with CCC centering (raw and smoothed CCC reported)."""
    from workflows_helpers import make_frame_corpus

    from avemo.workflows.ablation import run_grid
    from avemo.workflows.merge import merge_grid

    make_frame_corpus(tmp_path / "c")
    base = {
        "data": {
            "manifest": str(tmp_path / "c/manifest.csv"),
            "targets": ["valence", "arousal"],
            "features": {
                "face": str(tmp_path / "c/features/face.h5"),
                "audio": str(tmp_path / "c/features/audio.h5"),
            },
            "window": {"length": 20, "hop": 10},
            "batch_size": 4,
        },
        "task": {"type": "frame"},
        "model": {
            "name": "lfan",
            "visual": "face",
            "audio": ["audio"],
            "visual_channels": [8, 8],
            "audio_channels": [4, 4],
        },
        "loss": {"name": "ccc"},
        "optim": {"lr": 1e-2},
        "trainer": {"max_epochs": 2, "early_stopping": None},
        "output": {"plots": False},
    }
    grid = {
        "name": "va",
        "base": base,
        "axes": {},
        "cv": {"method": "kfold", "k": 3, "val": "test", "pool": "trainval"},
    }
    res = run_grid(grid, out_dir=tmp_path / "grid", quiet=True, report=False)
    assert len(res["table"]) == 3 and (res["table"]["status"] == "done").all()
    folds = pd.read_csv(tmp_path / "grid" / "folds" / "folds.csv")
    assert (
        folds.loc[folds["clip_id"] >= "vid08", "fold"].isna().all()
    )  # test clips stay out of the folds
    scores = merge_grid(tmp_path / "grid")
    for t in ("valence", "arousal"):
        s = scores[scores["target"] == t].set_index("what")["ccc"]
        assert set(s.index) == {
            "fold 0",
            "fold 1",
            "fold 2",
            "ccc_centering raw",
            "ccc_centering smoothed",
        }
        assert s.between(-1, 1).all()
    merged = pd.read_parquet(next((tmp_path / "grid" / "merged").glob("*/predictions.parquet")))
    assert sorted(merged["clip_id"].unique()) == ["vid08", "vid09", "vid10", "vid11"]
    assert len(merged) == 4 * 40 and merged["valence_pred"].between(-1, 1).all()


def test_merge_without_an_official_test_split_says_how_to_hold_one_out(tmp_path):
    """Aff-Wild2's manifests have train / val only (its test labels are not public): after CV over
    every clip there is nothing held out in common, which is a user's choice to fix, not a crash."""
    from workflows_helpers import make_frame_corpus

    from avemo.errors import UsageError
    from avemo.workflows.ablation import run_grid
    from avemo.workflows.merge import merge_grid

    make_frame_corpus(tmp_path / "c")
    man = pd.read_csv(tmp_path / "c/manifest.csv")
    man["split"] = man["split"].replace({"test": "val"})
    man.to_csv(tmp_path / "c/manifest.csv", index=False)
    base = {
        "data": {
            "manifest": str(tmp_path / "c/manifest.csv"),
            "targets": ["valence", "arousal"],
            "features": {
                "face": str(tmp_path / "c/features/face.h5"),
                "audio": str(tmp_path / "c/features/audio.h5"),
            },
            "window": {"length": 20, "hop": 10},
            "batch_size": 4,
        },
        "task": {"type": "frame"},
        "model": {"name": "late"},
        "loss": {"name": "ccc"},
        "trainer": {"max_epochs": 1, "early_stopping": None},
        "output": {"plots": False},
    }
    grid = {
        "name": "va",
        "base": base,
        "axes": {},
        "cv": {"method": "kfold", "k": 3, "val": "test", "pool": "trainval"},
    }
    assert (
        run_grid(grid, out_dir=tmp_path / "grid", quiet=True, report=False)["table"]["status"]
        == "done"
    ).all()
    with pytest.raises(UsageError, match="no clips with split=test.*mark those clips split=test"):
        merge_grid(tmp_path / "grid")
