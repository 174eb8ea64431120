"""The EmoDB descriptor experiment's plumbing: every model bundle is a valid grid cell (schema
checked by the grid's dry run), and the table's paired gap / folds won are computed per fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from avemo.workflows import emodb_descriptors as ed


def test_every_model_bundle_is_a_valid_grid_cell(tmp_path):
    from avemo.workflows.ablate import run_grid
    from avemo.workflows.emodb import base_config

    manifest = tmp_path / "m.csv"
    pd.DataFrame({"clip_id": [f"c{i}" for i in range(8)], "label": ["anger", "sadness"] * 4,
                  "subject": [f"{i // 2:02d}" for i in range(8)], "fold": [i // 4 for i in range(8)],
                  "split": "train", "audio": "x.wav"}).to_csv(manifest, index=False)
    grid = {"name": "t", "base": base_config(manifest, 60, ["anger", "sadness"]),
            "axes": {"method": ed.bundles(tmp_path / "features", list(ed.MODELS)), "seed": [0, 1]},
            "cv": {"method": "manifest", "k": 2, "val": "test"}}
    plan = run_grid(grid, out_dir=tmp_path / "out", dry_run=True, quiet=True)
    table = plan["table"]
    assert len(table) == len(ed.MODELS) * 2 * 2
    # the configs are valid; the only problem of each cell is that no feature file exists here
    assert table["problems"].str.contains("is not in the cache").all()


def test_table_paired_gap_and_folds_won():
    rows = []
    for f, (svm, a) in enumerate([(0.60, 0.70), (0.70, 0.72), (0.80, 0.75)]):
        rows.append({"method": "compare_svm", "fold": f, "seed": 0, "accuracy": svm, "uar": svm})
        for s, noise in enumerate((-0.01, 0.01)):
            rows.append({"method": "desc_all", "fold": f, "seed": s, "accuracy": a, "uar": a + noise})
    s = ed.table(pd.DataFrame(rows)).set_index("method")
    d = np.array([0.10, 0.02, -0.05])
    assert s.loc["desc_all", "gap_mean"] == pytest.approx(d.mean())
    assert s.loc["desc_all", "gap_std"] == pytest.approx(d.std(ddof=1))
    assert s.loc["desc_all", "folds_won"] == 2 and s.loc["desc_all", "seeds"] == 2
    md = ed.markdown(s.reset_index(), "3 folds", "cmd")
    assert "+2.3 ± 7.5 | 2/3" in md and "mean of 2 seeds" in md
