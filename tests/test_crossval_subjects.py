"""Subject leakage judged from the manifest itself, ``subject_leaks`` / ``subject_disjoint`` shown
to flag leaking splits, and ``run_crossval`` end to end with each fold's metric recomputed by
scikit-learn from the fold's own predictions (issue 21: these were never exercised)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from workflows_helpers import make_corpus

from avemo.fusion.splits import make_splits, subject_leaks
from avemo.workflows.crossval import run_crossval, subject_disjoint


def _manifest(n: int = 42, n_subjects: int = 7) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "clip_id": [f"c{i:03d}" for i in range(n)],
            "subject": [f"s{i % n_subjects}" for i in range(n)],
            "label": ["a", "b", "c"] * (n // 3),
        }
    )


def _subjects_by_hand(df: pd.DataFrame, clips: list[str]) -> set[str]:
    return set(df.set_index("clip_id").loc[list(clips), "subject"])


def test_leaks_flagged_on_a_hand_made_leaking_split() -> None:
    df = _manifest()
    parts = {"train": ["c000", "c001", "c002"], "val": ["c007", "c003"], "test": ["c008", "c004"]}
    # c007 is s0 (as c000), c008 is s1 (as c001); c003 / c004 are s3 / s4, not in train
    sp = {
        "partitions": parts,
        "subjects": {p: sorted(_subjects_by_hand(df, c)) for p, c in parts.items()},
    }
    assert subject_leaks(sp, df) == {"val": ["s0"], "test": ["s1"]}
    assert subject_disjoint(sp) is False
    clean = {"partitions": {**parts, "val": ["c003"], "test": ["c004"]}}
    clean["subjects"] = {
        p: sorted(_subjects_by_hand(df, c)) for p, c in clean["partitions"].items()
    }
    assert subject_leaks(clean, df) == {"val": [], "test": []}
    assert subject_disjoint(clean) is True


@pytest.mark.parametrize("k", [3, 7])
def test_subject_folds_disjoint_by_the_manifest_and_kfold_leaks(k) -> None:
    df = _manifest()
    tested: list[str] = []
    for fold in range(k):
        sp = make_splits(df, {"method": "subjects", "k": k, "fold": fold, "val": "next_fold"})
        parts = sp["partitions"]
        train_s = _subjects_by_hand(df, parts["train"])
        for p in ("val", "test"):  # judged from the manifest, not by subject_leaks
            assert not train_s & _subjects_by_hand(df, parts[p]), (fold, p)
        assert subject_disjoint(sp) and subject_leaks(sp, df) == {"val": [], "test": []}
        tested += parts["test"]
    assert sorted(tested) == sorted(df["clip_id"])  # each clip tested exactly once
    # clip-level k-fold over subjects spread across folds: the same checks must see the leak
    sp = make_splits(df, {"method": "kfold", "k": k, "fold": 0, "shuffle": False})
    by_hand = _subjects_by_hand(df, sp["partitions"]["train"]) & _subjects_by_hand(
        df, sp["partitions"]["test"]
    )
    assert by_hand and subject_leaks(sp, df)["test"] == sorted(by_hand)
    assert subject_disjoint(sp) is False


def test_run_crossval_folds_and_metrics_recomputed(tmp_path) -> None:
    root = tmp_path / "corpus"
    make_corpus(root, n_clips=36, n_subjects=6)
    base = {
        "data": {
            "manifest": str(root / "manifest.csv"),
            "features": {
                "face": str(root / "features/face.h5"),
                "audio": str(root / "features/audio.h5"),
            },
        },
        "model": {"name": "zhou", "temporal": "mean", "fusion": "concat"},
        "optim": {"lr": 0.01},
        "trainer": {"max_epochs": 2},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    res = run_crossval(
        tmp_path / "base.yaml",
        {"method": "subjects", "k": 3, "val": "test"},
        tmp_path / "cv",
        quiet=True,
        report=False,
    )
    table = res["table"]
    assert sorted(table["fold"].astype(int)) == [0, 1, 2] and (table["status"] == "done").all()
    man = pd.read_csv(root / "manifest.csv")
    folds = pd.read_csv(tmp_path / "cv" / "folds" / "folds.csv")
    assert sorted(folds["clip_id"]) == sorted(man["clip_id"]) and set(folds["fold"]) == {0, 1, 2}
    # every subject sits in one fold only (leave-subjects-out), judged from folds.csv
    assert (folds.groupby("subject")["fold"].nunique() == 1).all()
    tested: list[str] = []
    for _, row in table.iterrows():
        pred = pd.read_csv(Path(row["run_dir"]) / "predictions.csv")
        pred = pred[pred["partition"] == "test"] if "partition" in pred else pred
        in_fold = set(folds.loc[folds["fold"] == int(row["fold"]), "clip_id"])
        assert set(pred["clip_id"]) == in_fold
        tested += list(pred["clip_id"])
        assert row["test/accuracy"] == pytest.approx(accuracy_score(pred["label"], pred["pred"]))
        assert row["test/uar"] == pytest.approx(
            balanced_accuracy_score(pred["label"], pred["pred"])
        )
    assert sorted(tested) == sorted(man["clip_id"])
