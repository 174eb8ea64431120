"""EmoDB test beds (issue 23): the unbalanced-speaker bed derived from the real EmoDB manifest
(each speaker 1 or 2 of its own emotions, every emotion kept, seeded), and the bench's score
table on a tiny real bed with synthetic feature streams (speaker-disjoint folds, the recipe's
auto choice made on training speakers only, both SVM rows on the same folds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def test_unbalanced_bed_from_real_emodb(shared_data):
    from avemo.workflows.emodb import build_manifest
    from avemo.workflows.emodb_testbeds import unbalanced

    df = build_manifest(shared_data / "emodb-8spk", 4)
    for draw in range(3):
        d = unbalanced(df, draw)
        kept = d.groupby("subject")["label"].unique()
        assert set(kept.index) == set(df["subject"])  # every speaker stays ...
        assert kept.map(len).between(1, 2).all()  # ... with one or two emotions
        assert set(d["label"]) == set(df["label"])  # every emotion is kept by someone
        for s, labs in kept.items():  # all of the speaker's clips of a kept emotion, nothing else
            want = df[(df["subject"] == s) & df["label"].isin(labs)]["clip_id"]
            assert sorted(d[d["subject"] == s]["clip_id"]) == sorted(want)
        pd.testing.assert_frame_equal(d, unbalanced(df, draw))  # seeded
    assert not unbalanced(df, 0).equals(unbalanced(df, 1))


def test_score_bed_on_a_tiny_real_bed(tmp_path):
    pytest.importorskip("sklearn")
    from _fusion_data import write_set

    from avemo.data.store import ClipFeatures
    from avemo.fusion import speaker_norm as sn
    from avemo.fusion.features import load_features
    from avemo.workflows import emodb_testbeds as tb

    rng = np.random.default_rng(0)
    rows, streams = [], {m: [] for m in ("a", "b")}
    for s in range(4):
        for i in range(9):
            y = i % 3
            cid = f"s{s}_{i}"
            rows.append({"clip_id": cid, "subject": f"0{s}", "label": "xyz"[y], "fold": s // 2})
            for m in streams:
                v = rng.normal(size=(6, 4)) + 2.0 * y + rng.normal(0, 2)
                streams[m].append(
                    ClipFeatures(cid, v.astype(np.float32), np.arange(6) / 10, np.ones(6, bool))
                )
    df = pd.DataFrame(rows)
    arrays = {
        m: load_features(write_set(tmp_path / f"{m}.h5", m, c, 10.0, dim=4))
        for m, c in streams.items()
    }
    y = np.array(["xyz".index(v) for v in df["label"]])
    func = pd.DataFrame(rng.normal(size=(len(df), 12)) + y[:, None], index=df["clip_id"])
    out = pd.DataFrame(
        tb.score_bed("tiny", df, arrays, func, "4folds", seeds=2, log=lambda *_: None)
    )
    assert set(out["method"]) == set(tb.METHODS)
    for f, g in out.groupby("fold"):
        test = set(g["test_speakers"].iloc[0].split())
        assert test == {"00", "01"} if f == 0 else test == {"02", "03"}
        assert g.loc[g["method"] == "recipe", "seed"].tolist() == [0, 1]
        train = df.loc[df["fold"] != f, "clip_id"].tolist()  # recomputed on the training clips only
        who, labels = (
            dict(zip(df["clip_id"], df["subject"], strict=True)),
            dict(zip(df["clip_id"], df["label"], strict=True)),
        )
        _, table = sn.choose(arrays, who, labels, train, tb.PRIOR)
        assert g["inner"].dropna().iloc[0] == " ".join(
            f"{r['mode']}={r['inner_uar']:.3f}" for r in table
        )
        mode = g.loc[g["method"] == "recipe", "mode"].iloc[0]  # the recipe row is its mode's row
        assert mode == sn.pick(table, "best") and g["mode_1se"].dropna().iloc[0] == sn.pick(
            table, "1se"
        )
        same = g[g["method"] == f"recipe_{mode}"]["uar"].to_numpy()
        np.testing.assert_array_equal(g[g["method"] == "recipe"]["uar"].to_numpy(), same)
    assert out["uar"].between(0, 1).all()
