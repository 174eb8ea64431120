"""``data.speaker_norm`` shrink / auto (issue 23): the shrinkage formula by hand, the auto choice
against an independent scikit-learn inner CV, its behaviour on the two kinds of corpus, the
choice recorded in the run folder, and prediction normalising per speaker from the manifest's
``subject`` column (with a warning for speakers with few clips). Real HDF5 files throughout."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from _fusion_data import clip_config, clip_corpus

from avemo.data.store import ClipFeatures
from avemo.fusion import speaker_norm as sn
from avemo.fusion.features import load_features


def test_shrinkage_is_the_hand_computed_formula():
    # speaker a: 3 clips, values 1, 2, 3 -> mean 2, var 2/3; reference mean 0, var 4; prior 2
    # w = 3 / (3 + 2) = 0.6; mean' = 0.6 * 2 = 1.2; var' = 0.6 * 2/3 + 0.4 * 4 = 2.0
    x = np.array([[1.0], [2.0], [3.0], [10.0], [10.0]])
    group = np.array(["a", "a", "a", "b", "b"], dtype=object)
    ref = (np.array([0.0]), np.array([4.0]))
    z = sn.normalise_groups(x, np.ones(5, bool), group, {"a": 3, "b": 2}, prior=2.0, reference=ref)
    np.testing.assert_allclose(
        z[:3, 0], (np.array([1.0, 2.0, 3.0]) - 1.2) / np.sqrt(2.0), rtol=1e-12
    )
    # speaker b: constant column, 2 clips -> w = 0.5, mean' = 5, var' = 0 + 0.5 * 4 = 2: kept, not zeroed
    np.testing.assert_allclose(z[3:, 0], (10.0 - 5.0) / np.sqrt(2.0), rtol=1e-12)
    # the weight counts clips, not rows: a with 6 clips -> w = 0.75, mean' = 1.5, var' = 0.5 + 1 = 1.5
    z6 = sn.normalise_groups(x, np.ones(5, bool), group, {"a": 6, "b": 2}, prior=2.0, reference=ref)
    np.testing.assert_allclose(
        z6[:3, 0], (np.array([1.0, 2.0, 3.0]) - 1.5) / np.sqrt(1.5), rtol=1e-12
    )
    # prior 0: the plain per-speaker z-score
    z0 = sn.normalise_groups(x, np.ones(5, bool), group, {"a": 3, "b": 2}, prior=0.0, reference=ref)
    np.testing.assert_allclose(
        z0[:3, 0], (np.array([1.0, 2.0, 3.0]) - 2.0) / np.sqrt(2 / 3), rtol=1e-12
    )


def test_one_standard_error_rule_by_hand():
    # speaker best (0.58); gaps to it of a flat 0.54: 0.02, 0.06, 0.00, 0.08 -> mean 0.04,
    # std (ddof 1) 0.0365, standard error 0.0183: 0.04 is outside one standard error
    best = [0.56, 0.60, 0.54, 0.62]
    table = [
        {"mode": "off", "inner_uar": 0.5, "fold_uar": [0.5] * 4},
        {"mode": "shrink", "inner_uar": 0.54, "fold_uar": [0.54] * 4},
        {"mode": "speaker", "inner_uar": 0.58, "fold_uar": best},
    ]
    assert sn.pick(table, "best") == "speaker" and sn.pick(table, "1se") == "speaker"
    table[1].update(inner_uar=0.57, fold_uar=[0.57] * 4)  # gap 0.01 <= 0.0183: the simpler shrink
    assert sn.pick(table, "best") == "speaker" and sn.pick(table, "1se") == "shrink"
    table[0].update(inner_uar=0.565, fold_uar=[0.565] * 4)  # gap 0.015 <= 0.0183: the simplest, off
    assert sn.pick(table, "1se") == "off"
    table[0].update(inner_uar=0.56, fold_uar=[0.56] * 4)  # gap 0.02 > 0.0183: back to shrink
    assert sn.pick(table, "1se") == "shrink"


def test_speaker_normalised_shrinks_by_each_speakers_clip_count(tmp_path):
    c = clip_corpus(tmp_path)
    man = pd.read_csv(c["manifest"], dtype=str)
    who = dict(zip(man["clip_id"], man["subject"], strict=True))
    a = load_features(c["face"])
    ref = sn.reference_statistics(a, list(who))
    z = sn.speaker_normalised(a, who, prior=4.0, reference=ref)
    vals, mask = a.values.double().numpy(), a.row_mask.numpy()
    allrows = np.concatenate([np.arange(*a.rows_of(k)) for k in who])
    allrows = allrows[mask[allrows]]
    np.testing.assert_allclose(ref[0], vals[allrows].mean(0), rtol=1e-9)
    for s in sorted(set(who.values())):
        clips = [k for k, w in who.items() if w == s]
        rows = np.concatenate([np.arange(*a.rows_of(k)) for k in clips])
        v = vals[rows[mask[rows]]]
        w = len(clips) / (len(clips) + 4.0)
        mean = w * v.mean(0) + (1 - w) * vals[allrows].mean(0)
        var = w * v.var(0) + (1 - w) * vals[allrows].var(0)
        np.testing.assert_allclose(
            z.values[rows].double().numpy(), (vals[rows] - mean) / np.sqrt(var), atol=1e-5
        )


def _write(path, clips, name="syn"):
    from _fusion_data import write_set

    return write_set(path, name, clips, 10.0, dim=clips[0].values.shape[1])


def _synthetic(tmp_path, balanced: bool, seed: int = 0):
    """8 speakers x 3 classes, 5 frames x 6 dims per clip; class shifts dims 0-2. Balanced: every
    speaker 4 clips of every class and a large speaker offset (normalising pays). Unbalanced:
    every speaker one class, a small offset (normalising removes the class)."""
    rng = np.random.default_rng(seed)
    clips, rows = [], []
    for s in range(8):
        offset = rng.normal(0, 3.0 if balanced else 0.3, 6)
        scale = rng.uniform(0.5, 2.0, 6) if balanced else np.ones(6)
        for i in range(12):
            y = i % 3 if balanced else s % 3
            cid = f"s{s}_{i:02d}"
            v = (
                rng.normal(size=(5, 6)) * 0.7 + np.r_[np.full(3, 1.5 * y), np.zeros(3)]
            ) * scale + offset
            clips.append(
                ClipFeatures(cid, v.astype(np.float32), np.arange(5) / 10.0, np.ones(5, bool))
            )
            rows.append({"clip_id": cid, "subject": f"s{s}", "label": "abc"[y]})
    df = pd.DataFrame(rows)
    return {"x": load_features(_write(tmp_path / f"syn_{balanced}.h5", clips))}, df


def _independent_inner(arrays, who, labels, train, mode, prior):
    """The inner CV recomputed with scikit-learn's own pipeline and cross_val_score."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    sub = {k: who[k] for k in train}
    ref = {m: sn.reference_statistics(a, train) for m, a in arrays.items()}
    x = sn.clip_statistics(sn.normalised_arrays(arrays, sub, mode, prior, ref), train)
    groups = np.array([who[k] for k in train])
    pipe = make_pipeline(
        StandardScaler(),
        FunctionTransformer(lambda v: np.clip(v, -5, 5)),
        LogisticRegression(C=0.1, class_weight="balanced", max_iter=300),
    )
    cv = GroupKFold(n_splits=min(5, len(set(groups))))
    return cross_val_score(
        pipe,
        x,
        np.array([labels[k] for k in train]),
        groups=groups,
        cv=cv,
        scoring="balanced_accuracy",
    )


@pytest.mark.parametrize("balanced", [True, False])
def test_auto_choice_is_an_inner_cv_on_training_speakers(tmp_path, balanced):
    arrays, df = _synthetic(tmp_path, balanced)
    who = dict(zip(df["clip_id"], df["subject"], strict=True))
    labels = dict(zip(df["clip_id"], df["label"], strict=True))
    train = df.loc[df["subject"] != "s7", "clip_id"].tolist()  # s7: an outer test speaker
    a = arrays["x"]
    poisoned = a.values.clone()
    for k in df.loc[df["subject"] == "s7", "clip_id"]:
        poisoned[slice(*a.rows_of(k))] = float("nan")  # any read of s7 would make scores NaN
    arrays = {"x": dataclasses.replace(a, values=poisoned)}
    mode, table = sn.choose(arrays, who, labels, train, prior=10.0)
    got = {r["mode"]: r["inner_uar"] for r in table}
    for r in table:
        ref = _independent_inner(arrays, who, labels, train, r["mode"], 10.0)
        assert r["inner_folds"] == len(ref) == 5
        np.testing.assert_allclose(r["fold_uar"], ref, atol=1e-4)
        np.testing.assert_allclose(r["inner_uar"], ref.mean(), atol=1e-9)
    best = max(sn.MODES, key=lambda m: (got[m], -sn.MODES.index(m)))
    folds = {r["mode"]: np.array(r["fold_uar"]) for r in table}
    within = [
        m
        for m in sn.MODES  # one-standard-error rule, recomputed here
        if (folds[best] - folds[m]).mean()
        <= (folds[best] - folds[m]).std(ddof=1) / np.sqrt(5) + 1e-12
    ]
    assert mode == within[0] and sn.pick(table, "best") == best
    if balanced:  # speakers act every class: normalising pays
        assert mode != "off" and got[mode] > got["off"] + 0.1
    else:  # one class per speaker: per-speaker statistics remove it
        assert mode != "speaker" and got["speaker"] < got["off"] - 0.3 and got[mode] >= got["off"]


def test_run_folder_records_the_auto_choice(tmp_path):
    from avemo.fusion.train import train_from_config

    c = clip_corpus(tmp_path, n_clips=48)
    cfg = clip_config(
        c,
        tmp_path,
        data={"speaker_norm": "auto"},
        trainer={"max_epochs": 1, "accelerator": "cpu"},
        split={"method": "subjects", "k": 3, "fold": 0, "val": "test"},
    )
    res = train_from_config(cfg)
    run = res["run_dir"]
    rec = json.loads((run / "speaker_norm.json").read_text())
    assert rec["requested"] == "auto" and rec["mode"] in sn.MODES
    report = json.loads((run / "data_report.json").read_text())
    assert any(f"auto chose {rec['mode']}" in n for n in report["notes"])
    folds = pd.read_csv(run / "folds.csv", dtype=str)
    train = folds.loc[folds["partition"] == "train", "clip_id"].tolist()
    man = pd.read_csv(c["manifest"], dtype=str)
    who = dict(zip(man["clip_id"], man["subject"], strict=True))
    labels = dict(zip(man["clip_id"], man["label"], strict=True))
    arrays = {m: load_features(c[m]) for m in ("face", "audio")}
    mode, table = sn.choose(
        arrays, who, labels, train, prior=10.0
    )  # recomputed from the training clips
    assert rec["mode"] == mode
    assert [r["inner_uar"] for r in rec["inner"]] == pytest.approx(
        [r["inner_uar"] for r in table], abs=1e-12
    )
    with np.load(run / "speaker_norm.npz") as z:
        np.testing.assert_allclose(
            z["face/mean"], sn.reference_statistics(arrays["face"], train)[0], rtol=1e-12
        )


@pytest.fixture(scope="module")
def speaker_run(tmp_path_factory):
    from avemo.fusion.train import train_from_config

    tmp = tmp_path_factory.mktemp("spk_run")
    c = clip_corpus(tmp, n_clips=48)
    cfg = clip_config(
        c,
        tmp,
        data={"speaker_norm": "speaker", "normalize": False},
        trainer={"max_epochs": 1, "accelerator": "cpu"},
    )
    return c, train_from_config(cfg)["run_dir"]


def test_predict_normalises_per_speaker_from_the_subject_column(speaker_run):
    from avemo.fusion.features import FeatureFiles
    from avemo.fusion.predict import SpeakerNormWarning, _datamodule
    from avemo.fusion.run import Run

    c, run_dir = speaker_run
    run = Run.from_dir(run_dir, "last")
    assert run.speaker_norm["mode"] == "speaker"
    man = pd.read_csv(c["manifest"], dtype=str)
    ids = man["clip_id"].tolist()[:24]
    subjects = dict(zip(man["clip_id"], man["subject"], strict=True))
    with pytest.warns(SpeakerNormWarning, match="fewer than 10"):  # 4 clips per speaker here
        dm = _datamodule(
            run,
            FeatureFiles(
                run.cfg.data.model_copy(
                    update={"features": {"face": str(c["face"]), "audio": str(c["audio"])}}
                ),
                "cpu",
            ),
            ids,
            subjects,
        )
    b = dm.gather(dm.part_seqs["predict"])
    subj = np.array([subjects[k] for k in ids])
    for s in set(subj):  # each speaker's valid rows: mean 0 over that speaker only
        v = b["face"][np.flatnonzero(subj == s)][b["face_mask"][np.flatnonzero(subj == s)]].double()
        assert torch.allclose(v.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-5)
    assert dm.speakers == {k: subjects[k] for k in ids}


def test_predict_without_subjects_is_one_speaker_and_many_clips_do_not_warn(speaker_run):
    import warnings

    from avemo.fusion.features import FeatureFiles
    from avemo.fusion.predict import predict_files

    c, run_dir = speaker_run
    from avemo.fusion.run import Run

    run = Run.from_dir(run_dir, "last")
    ids = pd.read_csv(c["manifest"], dtype=str)["clip_id"].tolist()[:12]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 12 clips of one speaker: enough, no warning
        table, extra = predict_files(
            run, {"face": c["face"], "audio": c["audio"]}, ids, progress=False
        )
    assert set(extra["speakers"].values()) == {"predict"} and len(table) == 12
    fs = FeatureFiles(
        run.cfg.data.model_copy(
            update={"features": {"face": str(c["face"]), "audio": str(c["audio"])}}
        ),
        "cpu",
    )
    from avemo.fusion.predict import _datamodule

    dm = _datamodule(run, fs, ids)
    v = dm.gather(dm.part_seqs["predict"])
    pooled = v["face"][v["face_mask"]].double()
    assert torch.allclose(pooled.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-5)


def test_cli_inputs_keep_the_manifest_subject_and_speaker_names_bare_files(tmp_path):
    import soundfile as sf

    from avemo.workflows.predict import collect_inputs

    tone = (0.1 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    for n in ("a1", "a2", "b1"):
        sf.write(tmp_path / f"{n}.wav", tone, 16000)
    pd.DataFrame(
        {"clip_id": ["a1", "a2"], "audio": ["a1.wav", "a2.wav"], "subject": ["anna", "anna"]}
    ).to_csv(tmp_path / "m.csv", index=False)
    df = collect_inputs([tmp_path / "m.csv", tmp_path / "b1.wav"], speaker="bert")
    assert dict(zip(df["clip_id"], df["subject"], strict=True)) == {
        "a1": "anna",
        "a2": "anna",
        "b1": "bert",
    }
    plain = collect_inputs([tmp_path / "m.csv", tmp_path / "b1.wav"])
    assert plain["subject"].iloc[:2].tolist() == ["anna", "anna"] and pd.isna(
        plain["subject"].iloc[2]
    )


# ----------------------------------------------------------------------------- speaker_norm_only


def _with_identity(tmp_path, balanced: bool):
    """``_synthetic`` plus a stream ``id`` that is each speaker's own constant vector plus noise
    (what a speaker embedding is before per-speaker normalisation)."""
    arrays, df = _synthetic(tmp_path, balanced)
    rng = np.random.default_rng(1)
    centre = {s: rng.normal(0, 2.0, 4) for s in df["subject"].unique()}
    clips = [
        ClipFeatures(
            c,
            (centre[s] + rng.normal(0, 0.3, (2, 4))).astype(np.float32),
            np.arange(2) / 10.0,
            np.ones(2, bool),
        )
        for c, s in zip(df["clip_id"], df["subject"], strict=True)
    ]
    arrays["id"] = load_features(_write(tmp_path / f"id_{balanced}.h5", clips, "ident"))
    return arrays, df


@pytest.mark.parametrize("balanced", [True, False])
def test_speaker_norm_only_streams_are_scored_and_used_only_when_normalised(tmp_path, balanced):
    arrays, df = _with_identity(tmp_path, balanced)
    who = dict(zip(df["clip_id"], df["subject"], strict=True))
    labels = dict(zip(df["clip_id"], df["label"], strict=True))
    train = df.loc[df["subject"] != "s7", "clip_id"].tolist()
    mode, table = sn.choose(arrays, who, labels, train, prior=10.0, only=["id"])
    rows = {r["mode"]: r for r in table}
    # off is scored without the stream, the normalising modes with it
    without = {"x": arrays["x"]}
    np.testing.assert_allclose(
        rows["off"]["fold_uar"],
        _independent_inner(without, who, labels, train, "off", 10.0),
        atol=1e-4,
    )
    for m in ("shrink", "speaker"):
        np.testing.assert_allclose(
            rows[m]["fold_uar"], _independent_inner(arrays, who, labels, train, m, 10.0), atol=1e-4
        )
    out, res = sn.apply(arrays, who, "auto", train, labels, 10.0, only=["id", "gone"])
    rec = res["record"]
    assert rec["mode"] == mode and rec["only_normalised"] == ["id"]
    masked = not bool(out["id"].row_mask.any())
    assert masked == (mode == "off") and rec["masked"] == (["id"] if mode == "off" else [])
    if masked:
        assert not bool(out["id"].values.any()) and bool(arrays["id"].row_mask.all())
    assert bool(out["x"].row_mask.all())  # other streams untouched


def test_speaker_norm_only_modes_narrows_where_the_stream_is_used(tmp_path):
    """``data.speaker_norm_only_modes: [speaker]``: ``off`` and ``shrink`` are scored (and train)
    without the stream, ``speaker`` with it -- each row held to an independent scikit-learn CV."""
    arrays, df = _with_identity(tmp_path, True)
    who = dict(zip(df["clip_id"], df["subject"], strict=True))
    labels = dict(zip(df["clip_id"], df["label"], strict=True))
    train = df.loc[df["subject"] != "s7", "clip_id"].tolist()
    _, table = sn.choose(arrays, who, labels, train, 10.0, only=["id"], used_under=["speaker"])
    rows = {r["mode"]: r for r in table}
    without = {"x": arrays["x"]}
    for m, streams in (("off", without), ("shrink", without), ("speaker", arrays)):
        np.testing.assert_allclose(
            rows[m]["fold_uar"], _independent_inner(streams, who, labels, train, m, 10.0), atol=1e-4
        )
    for mode, used in (("shrink", False), ("speaker", True)):
        out, res = sn.apply(
            arrays, who, mode, train, labels, 10.0, only=["id"], used_under=["speaker"]
        )
        assert bool(out["id"].row_mask.any()) == used
        assert res["record"]["only_modes"] == ["speaker"]
        assert res["record"]["masked"] == ([] if used else ["id"])
        assert bool(out["x"].row_mask.all())
        if not used:
            assert "used only under speaker" in sn.describe(res["record"])


@pytest.mark.parametrize("bad", [[], ["off"], ["auto"]])
def test_speaker_norm_only_modes_rejects_what_is_not_a_normalising_mode(tmp_path, bad):
    from avemo.fusion.config import ConfigError, load_config

    c = clip_corpus(tmp_path, n_clips=12)
    with pytest.raises(ConfigError, match="speaker_norm_only_modes"):
        load_config(clip_config(c, tmp_path), [f"data.speaker_norm_only_modes={json.dumps(bad)}"])


def test_speaker_norm_only_in_runs_and_in_predict(tmp_path):
    from avemo.fusion.datamodule import CachedFeatureDataModule
    from avemo.fusion.features import FeatureFiles
    from avemo.fusion.predict import _datamodule
    from avemo.fusion.run import Run
    from avemo.fusion.train import train_from_config

    c = clip_corpus(tmp_path, n_clips=48)

    def cfg(norm):
        return clip_config(
            c,
            tmp_path,
            data={"speaker_norm": norm, "speaker_norm_only": ["audio"]},
            trainer={"max_epochs": 1, "accelerator": "cpu"},
            split={"method": "subjects", "k": 3, "fold": 0, "val": "test"},
        )

    off = CachedFeatureDataModule(cfg(False), "cpu")
    off.setup()
    b = off.gather(off.part_seqs["train"])
    assert not bool(b["audio_mask"].any()) and bool(b["face_mask"].any())
    assert any("audio masked" in n for n in off.notes)
    on = CachedFeatureDataModule(cfg("speaker"), "cpu")
    on.setup()
    assert bool(on.gather(on.part_seqs["train"])["audio_mask"].any())
    # predict masks the stream the way training did
    run_dir = train_from_config(cfg(False))["run_dir"]
    run = Run.from_dir(run_dir, "last")
    man = pd.read_csv(c["manifest"], dtype=str)
    ids = man["clip_id"].tolist()[:12]
    files = FeatureFiles(
        run.cfg.data.model_copy(
            update={"features": {"face": str(c["face"]), "audio": str(c["audio"])}}
        ),
        "cpu",
    )
    dm = _datamodule(run, files, ids, None)
    pb = dm.gather(dm.part_seqs["predict"])
    assert not bool(pb["audio_mask"].any()) and bool(pb["face_mask"].any())


def test_speaker_norm_only_modes_in_a_run_and_in_predict(tmp_path):
    """A run normalised with ``shrink`` and ``speaker_norm_only_modes: [speaker]`` trains without
    the stream, records why, and ``avemo predict`` masks it the same way."""
    from avemo.fusion.features import FeatureFiles
    from avemo.fusion.predict import _datamodule
    from avemo.fusion.run import Run
    from avemo.fusion.train import train_from_config

    c = clip_corpus(tmp_path, n_clips=48)
    cfg = clip_config(
        c,
        tmp_path,
        data={
            "speaker_norm": "shrink",
            "speaker_norm_only": ["audio"],
            "speaker_norm_only_modes": ["speaker"],
        },
        trainer={"max_epochs": 1, "accelerator": "cpu"},
        split={"method": "subjects", "k": 3, "fold": 0, "val": "test"},
    )
    run_dir = train_from_config(cfg)["run_dir"]
    rec = json.loads((run_dir / sn.RECORD_FILE).read_text())
    assert (
        rec["mode"] == "shrink" and rec["masked"] == ["audio"] and rec["only_modes"] == ["speaker"]
    )
    run = Run.from_dir(run_dir, "last")
    man = pd.read_csv(c["manifest"], dtype=str)
    files = FeatureFiles(
        run.cfg.data.model_copy(
            update={"features": {"face": str(c["face"]), "audio": str(c["audio"])}}
        ),
        "cpu",
    )
    dm = _datamodule(run, files, man["clip_id"].tolist()[:12], None)
    pb = dm.gather(dm.part_seqs["predict"])
    assert not bool(pb["audio_mask"].any()) and bool(pb["face_mask"].any())
    assert not bool(pb["audio"].any())  # masked after normalising, as in training


def test_speech_emotion_gates_its_d_vectors_and_documents_the_line_without_them(tmp_path) -> None:
    """speech_emotion.yaml's d-vector stream is used only fully normalised per speaker, the
    model is built on its 256-d rows, and the documented ``No d-vectors:`` command drops it; its
    late member reads the ComParE functionals alone, and ``No member:`` drops it."""
    import shlex
    from pathlib import Path

    from avemo.fusion import registry
    from avemo.fusion.config import load_config
    from avemo.fusion.spec import TaskSpec

    path = Path(__file__).resolve().parents[1] / "workflows" / "configs" / "speech_emotion.yaml"
    cfg = load_config(path)
    assert Path(cfg.data.features["speaker"]).name == "speaker_ge2e.h5"
    assert cfg.data.speaker_norm == "auto" and cfg.data.speaker_norm_only == ["speaker"]
    assert cfg.data.speaker_norm_only_modes == ["speaker"]
    registry.load_all()
    inputs = {m: (256,) if m == "speaker" else (8,) for m in cfg.data.features}
    model = registry.MODELS.build(
        cfg.model.name, inputs=inputs, task=TaskSpec("clip", 3), **cfg.model.options()
    )
    assert "speaker" in model.streams

    def documented(prefix: str) -> list[str]:
        """The overrides of the header's one ``# <prefix>`` fuse-train command."""
        lines = [ln for ln in path.read_text().splitlines() if ln.startswith(prefix)]
        assert len(lines) == 1, prefix
        argv = shlex.split(lines[0].removeprefix(prefix))
        assert argv[:4] == ["avemo", "fuse-train", "-c", "speech_emotion"]
        return argv[4:]

    without = load_config(path, documented("# No d-vectors:"))
    assert set(without.data.features) == set(cfg.data.features) - {"speaker"}
    # the late member (ComParE functionals, its own linear model) and the line that drops it
    assert Path(cfg.data.features["func"]).name == "compare_functionals.h5"
    assert cfg.model.options()["late"] == {"functionals": ["func"]} and model.has_members
    assert "func" not in model.streams and "func" in model.late["functionals"].streams
    alone = load_config(path, documented("# No member:"))
    assert set(alone.data.features) == set(cfg.data.features) - {"func"}
    plain = registry.MODELS.build(
        alone.model.name,
        inputs={m: inputs[m] for m in alone.data.features},
        task=TaskSpec("clip", 3),
        **alone.model.options(),
    )
    assert not plain.has_members and set(plain.streams) == set(alone.data.features)
    # the build command names every stream's stage-one set
    build = path.read_text().split("# Build inputs:")[1].split("# Train:")[0]
    for f in cfg.data.features.values():
        assert f"-s {Path(f).stem}" in build
