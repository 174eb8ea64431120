"""The nested study's inner choice (``experiments/emodb/run.py nested``) runs avemo's grid on the
outer fold's training speakers only: the outer test speaker's features are NaN in the very same
feature files, so any read of them would make a run fail or its probabilities NaN (checked: with
that speaker in the inner manifest the per-speaker-normalised runs predict NaN)."""

from __future__ import annotations

import argparse

import _experiments
import numpy as np
import pandas as pd

from experiments.emodb import run as er
from experiments.emodb import study as st

assert _experiments.ROOT


def test_inner_choice_never_reads_the_outer_test_speaker(tmp_path):
    df, feats = _experiments.tiny_corpus(tmp_path, speakers=4, clips=9, nan_speaker="03")
    spec = st.load_spec(st.GRIDS / "nested.yaml")
    spec["overrides"] = {
        **spec["overrides"],
        "data.features": {"a": "a", "b": "b"},
        "data.batch_size": 8,
    }
    keep = ["desc_all_wd0.01", "desc_all_spk_wd10"]
    spec["axes"]["method"] = {m: spec["axes"]["method"][m] for m in keep}
    train = df[df["subject"] != "03"]
    a = argparse.Namespace(epochs=2, quiet=True)
    best, table = er.inner_choice(spec, train, tmp_path / "inner", feats, a)
    assert list(table["method"]) == keep and best in keep
    assert (table["inner_folds"] == 3).all()  # one inner fold per training speaker
    assert np.isfinite(table["inner_uar"]).all()
    preds = sorted((tmp_path / "inner" / "grid" / "runs").glob("*/predictions.csv"))
    assert len(preds) == 2 * 3
    for f in preds:
        assert np.isfinite(pd.read_csv(f).filter(regex="^p_").to_numpy(float)).all(), f
    scores = table.set_index("method")["inner_uar"]
    assert best == max(keep, key=lambda m: (scores[m], -keep.index(m)))  # ties to the earlier
