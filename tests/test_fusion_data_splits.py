"""Splits: official mapping, deterministic k-fold, leave-subjects-out without leakage."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from avemo.fusion.config import ConfigError
from avemo.fusion.splits import make_splits, official_partition, subject_leaks, write_splits


def _manifest(n: int = 40, n_subjects: int = 7) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "clip_id": [f"clip{i:03d}" for i in range(n)],
            "subject": [f"spk{(i * 3) % n_subjects}" for i in range(n)],
            "split": ["train"] * (n - 10) + ["Validation"] * 5 + ["test"] * 5,
            "label": ["a"] * n,
        }
    )


def test_official_split_names():
    assert [official_partition(s) for s in ("Train", "dev", "validation", "test", "other")] == [
        "train",
        "val",
        "val",
        "test",
        None,
    ]
    sp = make_splits(_manifest(), {"method": "official"})
    assert [len(sp["partitions"][p]) for p in ("train", "val", "test")] == [30, 5, 5]


@pytest.mark.parametrize("k", [3, 4, 7])
def test_leave_subjects_out_never_leaks(k):
    df = _manifest()
    seen_test: set[str] = set()
    for fold in range(k):
        sp = make_splits(df, {"method": "subjects", "k": k, "fold": fold, "val": "next_fold"})
        assert subject_leaks(sp, df) == {"val": [], "test": []}
        parts = sp["partitions"]
        assert not set(parts["train"]) & set(parts["test"])
        assert set(parts["train"]) | set(parts["val"]) | set(parts["test"]) == set(df["clip_id"])
        seen_test |= set(parts["test"])
    assert seen_test == set(df["clip_id"])  # every clip is tested exactly once across folds


def test_subject_folds_balance_clip_counts():
    df = _manifest(70, 7)  # 10 clips per subject
    sp = make_splits(df, {"method": "subjects", "k": 7, "fold": 0, "val": "test"})
    assert len(sp["subjects"]["test"]) == 1 and len(sp["partitions"]["test"]) == 10
    assert sp["partitions"]["val"] == sp["partitions"]["test"]


def test_kfold_is_deterministic_sorted_chunks_and_keeps_official_test_out():
    df = _manifest().sample(frac=1.0, random_state=3)  # manifest order must not matter
    sp = make_splits(df, {"method": "kfold", "k": 6, "fold": 0, "val": "test", "pool": "trainval"})
    pool = sorted(df.loc[df["split"] != "test", "clip_id"])
    assert sp["partitions"]["test"] == pool[:6]  # 35 clips in 6 folds: first chunk has 6
    assert not set(sp["partitions"]["train"]) & {f"clip{i:03d}" for i in range(35, 40)}
    again = make_splits(
        df.sort_values("clip_id"),
        {"method": "kfold", "k": 6, "fold": 0, "val": "test", "pool": "trainval"},
    )
    assert again["partitions"] == sp["partitions"]
    shuffled = make_splits(df, {"method": "kfold", "k": 6, "fold": 0, "shuffle": True}, seed=1)
    assert shuffled["partitions"]["test"] != sp["partitions"]["test"]


def test_manifest_fold_column_is_used():
    df = _manifest(12, 3).assign(fold=[i % 3 for i in range(12)])
    sp = make_splits(df, {"method": "kfold", "k": 3, "fold": 1})
    assert sp["partitions"]["test"] == sorted(f"clip{i:03d}" for i in range(12) if i % 3 == 1)


def test_bad_split_settings_are_config_errors():
    df = _manifest()
    with pytest.raises(ConfigError, match="subjects"):
        make_splits(df, {"method": "subjects", "k": 8})
    with pytest.raises(ConfigError, match="split.fold"):
        make_splits(df, {"method": "kfold", "k": 3, "fold": 3})


def test_fold_lists_are_written(tmp_path):
    df = _manifest()
    sp = make_splits(df, {"method": "subjects", "k": 3, "fold": 2})
    write_splits(sp, df, tmp_path)
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved["partitions"] == sp["partitions"]
    folds = pd.read_csv(tmp_path / "folds.csv")
    assert set(folds.loc[folds["partition"] == "test", "clip_id"]) == set(sp["partitions"]["test"])
    assert folds.groupby("subject")["fold"].nunique().max() == 1


def _emotion_sorted(
    n_per: int = 8, classes: tuple[str, ...] = ("angry", "calm", "happy", "sad", "neutral")
):
    """RAVDESS-like: ids sort by emotion (``01-EE-...``), one actor, every class n_per times."""
    rows = [
        {"clip_id": f"01-{c:02d}-{r:02d}", "subject": "Actor_05", "label": lab}
        for c, lab in enumerate(classes, 1)
        for r in range(n_per)
    ]
    return pd.DataFrame(rows)


def test_contiguous_folds_of_emotion_sorted_ids_are_refused_with_counts():
    df = _emotion_sorted()
    labels = df["label"].tolist()
    with pytest.raises(ConfigError) as e:
        make_splits(df, {"method": "kfold", "k": 5, "fold": 0, "stratify": False}, labels=labels)
    msg = str(e.value)
    assert "test holds angry" in msg and "training partition lacks" in msg
    assert "test: angry=8" in msg and "split.stratify" in msg  # the counts and the fix
    notes: list[str] = []
    sp = make_splits(
        df,
        {"method": "kfold", "k": 5, "fold": 0, "stratify": False, "label_coverage": "warn"},
        labels=labels,
        notes=notes,
    )
    assert sp["label_counts"]["test"] == {"angry": 8} and "label_coverage=warn" in notes[0]


@pytest.mark.parametrize("shuffle", [False, True])
def test_kfold_is_stratified_like_sklearn(shuffle):
    from sklearn.model_selection import StratifiedKFold

    df = _emotion_sorted(n_per=7).sample(frac=1.0, random_state=0)  # manifest order must not matter
    labels = df["label"].tolist()
    ids = sorted(df["clip_id"])
    lab = dict(zip(df["clip_id"], labels, strict=True))
    ref = StratifiedKFold(5, shuffle=shuffle, random_state=3 if shuffle else None)
    for fold, (_, test) in enumerate(ref.split(ids, [lab[c] for c in ids])):
        sp = make_splits(
            df, {"method": "kfold", "k": 5, "fold": fold, "shuffle": shuffle}, seed=3, labels=labels
        )
        assert sp["partitions"]["test"] == sorted(ids[i] for i in test)
        counts = sp["label_counts"]
        assert set(counts["test"]) <= set(counts["train"]) and set(counts["val"]) <= set(
            counts["train"]
        )


def test_subject_folds_are_stratified_group_folds():
    from sklearn.model_selection import StratifiedGroupKFold

    rng = pd.Series(range(120))
    df = pd.DataFrame(
        {
            "clip_id": [f"c{i:03d}" for i in rng],
            "subject": [f"s{i % 12:02d}" for i in rng],
            "label": [("a", "b", "c")[(i // 12 + i) % 3] if i % 12 < 8 else "a" for i in rng],
        }
    )
    labels = df["label"].tolist()
    ids = sorted(df["clip_id"])
    lab, sub = (
        dict(zip(df["clip_id"], labels, strict=True)),
        dict(zip(df["clip_id"], df["subject"], strict=True)),
    )
    ref = StratifiedGroupKFold(4).split(ids, [lab[c] for c in ids], [sub[c] for c in ids])
    for fold, (_, test) in enumerate(ref):
        sp = make_splits(df, {"method": "subjects", "k": 4, "fold": fold}, labels=labels)
        assert sp["partitions"]["test"] == sorted(ids[i] for i in test)
        assert subject_leaks(sp, df) == {"val": [], "test": []}


def test_degenerate_manifest_folds_name_the_fold_column():
    df = _emotion_sorted().assign(fold=0)  # what an adapter writes for a single actor
    labels = df["label"].tolist()
    notes: list[str] = []
    sp = make_splits(df, {"method": "kfold", "k": 5, "fold": 1}, labels=labels, notes=notes)
    assert "fold column holds 1 distinct value(s) [0]" in notes[0] and "made 5 folds" in notes[0]
    assert set(sp["label_counts"]["test"]) == set(df["label"])  # stratified instead
    with pytest.raises(
        ConfigError, match=r"use_manifest_folds=true but the manifest's fold column holds 1"
    ):
        make_splits(df, {"method": "kfold", "k": 5, "use_manifest_folds": True}, labels=labels)
    good = df.assign(fold=[i % 5 for i in range(len(df))])  # k usable folds: taken as they are
    sp = make_splits(
        good, {"method": "kfold", "k": 5, "fold": 2}, labels=labels, notes=(notes := [])
    )
    assert sp["partitions"]["test"] == sorted(good.loc[good["fold"] == 2, "clip_id"]) and not notes


def test_more_manifest_folds_than_k_are_merged_mod_k_and_said_so():
    df = _emotion_sorted()
    df = df.assign(fold=[i % 10 for i in range(len(df))])  # ten folds in the manifest
    labels = df["label"].tolist()
    notes: list[str] = []
    sp = make_splits(df, {"method": "kfold", "k": 5, "fold": 2}, labels=labels, notes=notes)
    want = sorted(df.loc[df["fold"].isin([2, 7]), "clip_id"])  # 2 and 7 are 2 mod 5
    assert sp["partitions"]["test"] == want
    assert len(notes) == 1 and "holds 10 values" in notes[0] and "split.k=10" in notes[0]
