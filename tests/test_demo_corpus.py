"""The demo corpus: builds from the cached public media, decodes, validates, rebuilds idempotently."""

from __future__ import annotations

import av
import numpy as np
import pandas as pd
import pytest

from avemo.data.adapters import build_manifest
from avemo.data.adapters.demo import CLASSES
from avemo.data.demo import AUDIO_RATE, FPS, SEGMENTS, build_demo_corpus, clip_table, frame_count
from avemo.data.manifest import ManifestError, load_manifest
from avemo.fusion.config import ConfigError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return build_demo_corpus(out)


def _streams(path: str) -> tuple[list[np.ndarray], np.ndarray, float]:
    with av.open(path) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        duration = c.duration / 1e6
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(path) as c:
        assert c.streams.audio[0].rate == AUDIO_RATE
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return frames, audio, duration


def test_table_is_sensible():
    t = clip_table()
    assert 20 <= len(t) <= 30 and t["clip_id"].is_unique
    assert set(t["label"]) == set(CLASSES) and set(t["split"]) == {"train", "val"}
    counts = t.groupby(["label", "split"]).size()
    assert (counts.xs("train", level="split") >= 3).all() and (
        counts.xs("val", level="split") >= 1
    ).all()
    assert ((t["end"] - t["start"]).between(1.5, 3.0)).all()
    assert t["speech_start"].is_unique  # a different stretch of speech per clip
    assert (t["speech_start"] + t["end"] - t["start"] <= 30.0).all()
    # within one source, a val window never overlaps a train window
    for src, g in t.groupby("source"):
        for _, v in g[g["split"] == "val"].iterrows():
            tr = g[(g["split"] == "train") & (g["subject"] == v["subject"])]
            assert ((tr["end"] <= v["start"]) | (tr["start"] >= v["end"])).all(), src
    # a clip with no face and one where the face appears or disappears
    assert (t["subject"] == "no_face").any()
    assert (
        t["seen"].str.contains("face appears").any() and t["seen"].str.contains("disappears").any()
    )
    assert clip_table().equals(t)  # deterministic


def test_manifest_validates(corpus):
    df = load_manifest(corpus, classes=CLASSES)
    assert len(df) == len(clip_table())
    assert (df["video"] == df["audio"]).all()
    assert df.groupby("subject")["label"].nunique().max() <= 2
    via_adapter = build_manifest("demo", corpus.parent)
    assert via_adapter["clip_id"].tolist() == df["clip_id"].tolist()
    assert via_adapter["video"].tolist() == df["video"].tolist()


def test_every_clip_decodes_with_video_and_speech(corpus):
    df = load_manifest(corpus)
    table = clip_table().set_index("clip_id")
    loudness = {}
    for r in df.itertuples():
        frames, audio, duration = _streams(r.video)
        want = frame_count(table.loc[r.clip_id, "end"] - table.loc[r.clip_id, "start"])
        assert len(frames) == want and frames[0].shape == (360, 640, 3)
        assert duration == pytest.approx(want / FPS, abs=0.05)
        assert len(audio) / AUDIO_RATE == pytest.approx(want / FPS, abs=0.1)
        rms = float(np.sqrt(np.mean(audio**2)))
        loudness[r.clip_id] = 20 * np.log10(rms + 1e-12)
    assert min(loudness.values()) > -45, loudness  # speech, not the silent lead-in of sample.wav


def test_clips_are_cut_where_the_table_says(corpus, media):
    """The first frame of a clip is the source frame at the clip's start time."""
    seg = next(s for s in SEGMENTS if s.split == "val" and s.source.startswith("Wolfgang"))
    cid = f"{seg.key}_{int(round(seg.start * 100)):04d}"
    frames, _, _ = _streams(str(corpus.parent / "clips" / f"{cid}.mp4"))
    with av.open(str(media(seg.source))) as c:
        s = c.streams.video[0]
        src = [
            (float(f.pts * s.time_base), f.to_ndarray(format="rgb24"))
            for f in c.decode(s)
            if seg.start - 0.5 < f.pts * s.time_base < seg.start + 0.5
        ]
    err = {t: np.abs(img.astype(float) - frames[0].astype(float)).mean() for t, img in src}
    best = min(err, key=err.get)
    assert abs(best - seg.start) < 0.05 and err[best] < 6, (best, err[best])


def test_rebuild_is_idempotent_and_completes(corpus):
    clips = sorted((corpus.parent / "clips").glob("*.mp4"))
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in clips}
    manifest_before = corpus.read_text()
    victim = clips[0]
    victim.unlink()
    assert build_demo_corpus(corpus.parent) == corpus
    assert corpus.read_text() == manifest_before
    for p in clips:
        if p != victim:
            assert p.stat().st_mtime_ns == stamps[p][0]  # untouched
    assert victim.read_bytes() == stamps[victim][1]  # rebuilt byte for byte


def test_demo_adapter_needs_a_built_corpus(tmp_path):
    with pytest.raises(ManifestError, match="build the corpus first"):
        build_manifest("demo", tmp_path)
    pd.DataFrame({"clip_id": ["x"], "file": ["clips/x.mp4"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    with pytest.raises(ManifestError, match="lacks columns"):
        build_manifest("demo", tmp_path)


# --- workflows/demo.py (make demo) -----------------------------------------------------------


def test_demo_workflow_runs_what_exists_and_names_the_rest(corpus, monkeypatch, tmp_path, capsys):
    import avemo.workflows.demo as wf
    from avemo.data.store import FeatureFile

    monkeypatch.setattr(wf, "FEATURE_SETS", ("logmel", "no_such_set"))
    result = wf.run_demo(corpus.parent)
    out = capsys.readouterr().out
    assert set(result["features"]) == {"logmel"}
    with FeatureFile(result["features"]["logmel"]) as f:
        assert len(f) == len(clip_table()) and f.status_counts() == {"ok": len(clip_table())}
    assert "not available yet" in out and "no_such_set" in out
    assert any(
        s.startswith("training: needs the feature sets no_such_set") for s in result["skipped"]
    )
    assert "-- features logmel" in out and "status       ok=" in out
    monkeypatch.setattr(wf, "FEATURE_SETS", ("logmel",))
    monkeypatch.setattr(wf, "CONFIG", tmp_path / "a" / "b" / "missing.yaml")
    result = wf.run_demo(corpus.parent)
    assert any("does not exist yet" in s for s in result["skipped"]) and "run_dir" not in result


def test_training_overrides_redirect_the_configs_feature_files(tmp_path):
    from avemo.workflows.demo import training_overrides

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data:\n  features: {face: demo/features/face_fer2013.h5, audio: x/logmel.h5}\n"
        "model: {name: zhou}\n"
    )
    feats = {"logmel": tmp_path / "f" / "logmel.h5"}
    over = training_overrides(cfg, tmp_path / "m.csv", feats, tmp_path)
    assert over == [
        f"data.manifest={tmp_path / 'm.csv'}",
        f"output.dir={tmp_path / 'runs'}",
        f"data.features.face={tmp_path / 'features' / 'face_fer2013.h5'}",
        f"data.features.audio={tmp_path / 'f' / 'logmel.h5'}",
    ]
    # read as fuse-train reads it: the features a `base:` names, set names in features_dir
    derived = tmp_path / "d.yaml"
    derived.write_text("base: c.yaml\ndata: {features_dir: sets, features: {audio: logmel}}\n")
    assert training_overrides(derived, tmp_path / "m.csv", feats, tmp_path)[2:] == [
        f"data.features.face={tmp_path / 'features' / 'face_fer2013.h5'}",
        f"data.features.audio={tmp_path / 'f' / 'logmel.h5'}",
    ]
    cfg.write_text("model: {name: zhou}\n")  # no features named: not a run config, one line
    with pytest.raises(ConfigError, match=r"^data\.features is required"):
        training_overrides(cfg, tmp_path / "m.csv", {}, tmp_path)
