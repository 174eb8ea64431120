"""EmoDB test beds (issue 23; ``experiments/emodb``): the unbalanced-speaker bed derived from the
real EmoDB manifest (each speaker 1 or 2 of its own emotions, every emotion kept, seeded), and
one bed scored through avemo's grid runner on a tiny corpus (speaker-disjoint folds, the auto
choice each recipe run recorded equals ``fusion.speaker_norm.choose`` recomputed on that fold's
training clips only, both SVM rows on the same folds)."""

from __future__ import annotations

import argparse
import json

import _experiments
import numpy as np
import pandas as pd

from experiments.emodb import run as er
from experiments.emodb import study as st

assert _experiments.ROOT


def test_unbalanced_bed_from_real_emodb(shared_data):
    df = st.build_manifest(shared_data / "emodb-8spk", 4)
    for draw in range(3):
        d = er.unbalanced(df, draw)
        kept = d.groupby("subject")["label"].unique()
        assert set(kept.index) == set(df["subject"])  # every speaker stays ...
        assert kept.map(len).between(1, 2).all()  # ... with one or two emotions
        assert set(d["label"]) == set(df["label"])  # every emotion is kept by someone
        for s, labs in kept.items():  # all of the speaker's clips of a kept emotion, nothing else
            want = df[(df["subject"] == s) & df["label"].isin(labs)]["clip_id"]
            assert sorted(d[d["subject"] == s]["clip_id"]) == sorted(want)
        pd.testing.assert_frame_equal(d, er.unbalanced(df, draw))  # seeded
    assert not er.unbalanced(df, 0).equals(er.unbalanced(df, 1))


def test_score_bed_through_the_grid_runner(tmp_path):
    from avemo.fusion import speaker_norm as sn
    from avemo.fusion.features import load_features

    df, feats = _experiments.tiny_corpus(tmp_path)
    spec = st.load_spec(st.GRIDS / "testbeds.yaml")
    spec["overrides"] = {
        **spec["overrides"],
        "data.features": {"a": "a", "b": "b"},
        "data.batch_size": 8,
    }
    a = argparse.Namespace(methods=["recipe", "recipe_off"], seeds=2, epochs=1, quiet=True)
    rng = np.random.default_rng(1)
    y = np.array(["xyz".index(v) for v in df["label"]])
    func = pd.DataFrame(rng.normal(size=(len(df), 12)) + y[:, None], index=df["clip_id"])
    out = er.score_bed("tiny", df, "4folds", tmp_path / "bed", feats, spec, a, func)
    assert set(out["method"]) == {
        "recipe",
        "recipe_off",
        "recipe_ens2",
        "compare_svm",
        "compare_svm_spk",
    }
    arrays = {m: load_features(feats / f"{m}.h5") for m in ("a", "b")}
    who = dict(zip(df["clip_id"], df["subject"], strict=True))
    labels = dict(zip(df["clip_id"], df["label"], strict=True))
    for f, g in out.groupby("fold"):
        assert g["test_speakers"].nunique() == 1  # every method on the same speakers
        test = set(g["test_speakers"].iloc[0].split())
        assert test == ({"00", "01"} if f == 0 else {"02", "03"})
        assert all(test.isdisjoint(t.split()) for t in g["train_speakers"])
        assert int(g["unseen_test_clips"].iloc[0]) == 0
        recipe = g[g["method"] == "recipe"]
        assert sorted(recipe["seed"]) == [0, 1]
        train = df.loc[df["fold"] != f, "clip_id"].tolist()  # recomputed on the training clips only
        mode, table = sn.choose(arrays, who, labels, train, rule="best")
        assert set(recipe["mode"]) == {mode}
        rec = json.loads(
            (tmp_path / "bed" / "grid" / "runs")
            .joinpath(recipe["run_dir"].iloc[0].rsplit("/", 1)[-1], "speaker_norm.json")
            .read_text()
        )
        np.testing.assert_allclose(
            [r["inner_uar"] for r in rec["inner"]], [r["inner_uar"] for r in table]
        )
        assert (g.loc[g["method"] == "recipe_off", "mode"] == "off").all()
    assert out["uar"].between(0, 1).all()


def test_every_emodb_grid_resolves_on_the_base_it_was_scored_on():
    """The grids scored before the d-vectors joined the packaged recipe keep its five-stream
    form (``configs/speech_emotion_five_streams.yaml``): that base is speech_emotion.yaml with
    exactly the d-vector keys undone, and each grid reads the stage-one sets its methods name."""
    from avemo.extract.registry import FEATURE_SETS, load_all
    from avemo.fusion.config import config_dict, load_config

    load_all()

    root = st.GRIDS.parent
    five = config_dict(load_config(root / "configs" / "speech_emotion_five_streams.yaml"))
    six = config_dict(load_config(root / "configs" / "speech_emotion_six_streams.yaml"))
    ships = config_dict(load_config(_experiments.ROOT / "workflows/configs/speech_emotion.yaml"))
    drop = ("_source",)

    def undo_late(cfg: dict) -> None:
        """The late member (added after both frozen bases): its stream and model keys."""
        assert "func" not in cfg["data"]["features"]
        assert cfg["model"]["late"] is None and cfg["model"]["per_modality_stats"] is None
        assert ships["model"]["late"] == {"functionals": ["func"]}
        cfg["data"]["features"]["func"] = ships["data"]["features"]["func"]
        for key in ("late", "per_modality_stats"):
            cfg["model"][key] = ships["model"][key]

    assert set(ships["data"]["features"]) - set(five["data"]["features"]) == {"speaker", "func"}
    for key, value in [
        ("speaker_norm_only", []),
        ("speaker_norm_only_modes", ["shrink", "speaker"]),
    ]:
        assert five["data"][key] == value and ships["data"][key] != value
        five["data"][key] = ships["data"][key]
    five["data"]["features"]["speaker"] = ships["data"]["features"]["speaker"]
    # the grids scored on the six-stream recipe (d-vectors gated) name a frozen copy of it
    assert set(ships["data"]["features"]) - set(six["data"]["features"]) == {"func"}
    for frozen in (five, six):
        undo_late(frozen)
        assert {k: v for k, v in frozen.items() if k not in drop} == {
            k: v for k, v in ships.items() if k not in drop
        }
    grids = sorted(st.GRIDS.glob("*.yaml"))
    assert grids
    for g in grids:
        spec = st.load_spec(g)
        assert load_config(spec["base"], check_args=False).name == "speech_emotion", g.name
        sets = st.grid_sets(spec, spec["axes"]["method"])
        assert sets and sets <= set(FEATURE_SETS.names()), (g.name, sets)
        named = {
            p.split("/")[-1]
            for m in spec["axes"]["method"].values()
            for p in ((m or {}).get("data.features") or {}).values()
            if p
        }
        assert ("speaker_ge2e" in sets) == ("speaker_ge2e" in named), g.name
