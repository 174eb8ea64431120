"""The EmoDB eGeMAPS + SVM baseline recomputed with scikit-learn, outside avemo's code path.

On real EmoDB clips (``../shared/data``: skipped without it), ``run_emodb`` with the egemaps
baseline only: for each speaker fold, every C of the grid is scored here by leave-one-speaker-out
UAR on the training speakers with sklearn's own ``cross_val_score``, the best C (first on ties,
as GridSearchCV) must be the one avemo reports, and the test speakers' accuracy / UAR of
StandardScaler + linear SVC (balanced classes) at that C must equal avemo's to 1e-9. Labels and
speakers are read from the corpus' own ``labels.csv``, not from avemo's manifest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the decades the README names for the baseline


def test_egemaps_svm_baseline_equals_sklearn_recomputation(shared_data, tmp_path) -> None:
    pytest.importorskip("opensmile", reason="opensmile is the [smile] extra (`make smile`)")
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from avemo.workflows.emodb import run_emodb

    root = shared_data / "emodb-8spk"
    out = tmp_path / "emodb"
    res = run_emodb(
        root,
        out,
        folds=2,
        speakers=["03", "08", "09", "10"],
        models=[],
        baselines=["egemaps"],
        bench=False,
        limit=12,
    )
    rows = res["per_fold"].set_index("fold")
    feats = pd.read_parquet(out / "opensmile" / "egemaps.parquet")  # opensmile's functionals
    truth = pd.read_csv(root / "labels.csv", dtype={"speaker": str}).set_index("clip_id")
    truth = truth.loc[feats.index]
    x = np.nan_to_num(feats.to_numpy(np.float64))
    y, spk = truth["emotion"].to_numpy(), truth["speaker"].to_numpy()
    assert feats.shape[1] == 88 and len(feats) == 4 * 12
    assert sorted(rows.index) == [0, 1]
    for fold, r in rows.iterrows():
        test_spk = r["test_speakers"].split()
        test = np.isin(spk, test_spk)
        assert sorted(set(spk[~test])) == sorted(r["train_speakers"].split())

        def pipe(c: float):
            return make_pipeline(
                StandardScaler(), SVC(kernel="linear", C=c, class_weight="balanced")
            )

        inner = [
            cross_val_score(
                pipe(c),
                x[~test],
                y[~test],
                groups=spk[~test],
                cv=LeaveOneGroupOut(),
                scoring="balanced_accuracy",
            ).mean()
            for c in C_GRID
        ]
        best = C_GRID[int(np.argmax(inner))]
        assert r["C"] == pytest.approx(best), (fold, dict(zip(C_GRID, inner, strict=True)))
        pred = pipe(best).fit(x[~test], y[~test]).predict(x[test])
        assert r["accuracy"] == pytest.approx(accuracy_score(y[test], pred), abs=1e-9)
        assert r["uar"] == pytest.approx(balanced_accuracy_score(y[test], pred), abs=1e-9)
    assert rows["uar"].max() > 1 / 7  # the baseline does learn: above chance on 7 classes
