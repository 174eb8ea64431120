"""The EmoDB descriptor / nested / test-bed grids (``experiments/emodb/grids``): every bundle is a
valid cell of avemo's grid runner on an EmoDB-like manifest (schema checked by its dry run), and
the summary's paired gap / folds won are the per-fold differences computed here with numpy."""

from __future__ import annotations

import json

import _experiments
import numpy as np
import pandas as pd
import pytest

from experiments.emodb import study as st

assert _experiments.ROOT


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in st.GRIDS.glob("*.yaml"))
)  # every study grid
def test_every_bundle_is_a_valid_grid_cell(tmp_path, name):
    from avemo.workflows.ablation import run_grid

    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(8)],
            "label": ["anger", "sadness"] * 4,
            "subject": [f"{i // 2:02d}" for i in range(8)],
            "fold": [i // 4 for i in range(8)],
            "split": "train",
            "audio": "x.wav",
        }
    ).to_csv(manifest, index=False)
    spec = st.load_spec(st.GRIDS / f"{name}.yaml")
    methods = list(spec["axes"]["method"])
    spec["cv"] = {"method": "manifest", "k": 2, "val": "test"}
    spec["overrides"] = [
        *(f"{k}={json.dumps(v)}" for k, v in st.overrides_of(spec).items()),
        f"data.manifest={manifest}",
        f"data.features_dir={tmp_path / 'features'}",
    ]
    plan = run_grid(spec, out_dir=tmp_path / "out", dry_run=True, quiet=True)["table"]
    assert len(plan) == len(methods) * len(spec["axes"]["seed"]) * 2
    # the configs are valid; the only problem of each cell is that no feature file exists here
    assert plan["problems"].str.contains("is not in the cache").all()
    # every feature set a study names is a registered stage-one set (a typo would only show
    # as "not in the cache" above)
    from avemo.extract.registry import FEATURE_SETS, load_all

    load_all()
    assert st.grid_sets(spec, methods) <= set(FEATURE_SETS.names())


def test_summary_paired_gap_and_folds_won():
    rows = []
    for f, (svm, a) in enumerate([(0.60, 0.70), (0.70, 0.72), (0.80, 0.75)]):
        rows.append({"method": "compare_svm", "fold": f, "seed": 0, "accuracy": svm, "uar": svm})
        for s, noise in enumerate((-0.01, 0.01)):
            rows.append(
                {"method": "desc_all", "fold": f, "seed": s, "accuracy": a, "uar": a + noise}
            )
    s = st.summarise(pd.DataFrame(rows), {}, ["compare_svm"]).set_index("method")
    d = np.array([0.10, 0.02, -0.05])
    mean, std, won = s.loc["desc_all", "gap_compare_svm"]
    assert mean == pytest.approx(d.mean()) and std == pytest.approx(d.std(ddof=1)) and won == 2
    assert s.loc["desc_all", "seeds"] == 2
    assert s.loc["desc_all", "seed_std_uar"] == pytest.approx(np.std([-0.01, 0.01], ddof=1))
    md = "\n".join(st.markdown_table(s.reset_index(), ["compare_svm"]))
    assert "+2.3 ± 7.5 (2/3)" in md and "mean of 2 seeds" in md
