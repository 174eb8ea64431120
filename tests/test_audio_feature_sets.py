"""Audio feature sets end to end: per-clip statuses in one batch, provenance, registry, runner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from test_audio_decode import video_without_audio

from avemo.data.store import FeatureFile
from avemo.extract.base import ClipInput
from avemo.extract.registry import AUDIO, FEATURE_SETS, load_all

SPECTRAL = {"spectrogram": (257,), "logmel": (64,), "mfcc": (39,)}


@pytest.fixture(scope="module")
def batch(media, tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    empty = d / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    junk = d / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEfmt " + b"\0" * 64)
    silence = d / "silence.wav"
    sf.write(silence, np.zeros(8000, np.float32), 16000)
    tiny = d / "tiny.wav"
    sf.write(tiny, np.full(40, 0.1, np.float32), 16000)
    return [
        ClipInput("speech", audio=str(media("sample.wav"))),
        ClipInput("video", video=str(media("single_face.mp4"))),
        ClipInput("mute_video", video=str(video_without_audio(d / "mute.mp4"))),
        ClipInput("empty", audio=str(empty)),
        ClipInput("junk", audio=str(junk)),
        ClipInput("missing", audio=str(d / "missing.wav")),
        ClipInput("no_paths"),
        ClipInput("silence", audio=str(silence)),
        ClipInput("tiny", audio=str(tiny)),
    ]


def test_registered():
    load_all()
    for name in ("spectrogram", "logmel", "mfcc", "speech_embedding", "vggish", "panns_cnn14"):
        assert name in FEATURE_SETS and FEATURE_SETS.get(name).modality == "audio"
    assert "log_mel" in AUDIO


@pytest.mark.parametrize("name", sorted(SPECTRAL))
def test_statuses_shapes_timestamps_in_one_batch(batch, name):
    load_all()
    fs = FEATURE_SETS.build(name)
    out = {c.clip_id: c for c in fs.extract(batch)}
    assert sorted(out) == sorted(c.clip_id for c in batch)
    want = {
        "speech": "ok",
        "video": "ok",
        "mute_video": "no_audio",
        "empty": "no_audio",
        "junk": "error",
        "missing": "error",
        "no_paths": "no_audio",
        "silence": "ok",
        "tiny": "ok",
    }
    assert {k: v.status for k, v in out.items()} == want
    assert "no audio stream" in out["mute_video"].message
    assert out["junk"].message.startswith("decode failed")
    sp = out["speech"]
    assert sp.values.shape == (1 + 480000 // 160, *SPECTRAL[name]) and sp.values.dtype == np.float32
    np.testing.assert_allclose(sp.timestamps, np.arange(len(sp.values)) * 0.01)
    assert sp.mask.all() and np.isfinite(sp.values).all()
    assert out["silence"].values.shape == (51, *SPECTRAL[name])
    assert np.isfinite(out["silence"].values).all()
    assert out["tiny"].values.shape == (1, *SPECTRAL[name])
    for bad in ("mute_video", "empty", "junk"):
        assert out[bad].values.shape == (0, *SPECTRAL[name])


def test_provenance_records_every_parameter_and_rejects_unknown_keys():
    load_all()
    fs = FEATURE_SETS.build("logmel", {"n_mels": 40, "deltas": 2})
    prov = fs.provenance()
    assert prov["config"]["n_mels"] == 40 and prov["config"]["win_ms"] == 25.0
    assert set(prov["config"]) == set(FEATURE_SETS.get("logmel").default_config)
    assert prov["rate_hz"] == 100.0
    assert fs.row_shape() == (3, 40)
    assert prov["config_hash"] != FEATURE_SETS.build("logmel").provenance()["config_hash"]
    with pytest.raises(ValueError, match="nmels: unknown key, did you mean n_mels"):
        FEATURE_SETS.build("logmel", {"nmels": 40})
    with pytest.raises(ValueError, match="n_fft"):
        FEATURE_SETS.build("spectrogram", {"win_ms": 50.0})


def test_runner_writes_hdf5_for_mixed_clips(batch, tmp_path):
    from avemo.extract.runner import run_features

    df = pd.DataFrame(
        {
            "clip_id": [c.clip_id for c in batch],
            "audio": [c.audio for c in batch],
            "video": [c.video for c in batch],
        }
    )
    written = run_features(df, ["logmel", "mfcc"], tmp_path, progress=False, batch_clips=4)
    with FeatureFile(written["logmel"]) as f:
        assert f.row_shape == (64,)
        # the runner looks for media first: the deleted file is `missing`, the junk one `error`
        assert f.status_counts() == {"ok": 4, "no_audio": 3, "error": 1, "missing": 1}
        clip = f.clip("speech")
        assert clip.values.shape == (3001, 64) and clip.timestamps[1] == pytest.approx(0.01)
        assert f.provenance["config"]["n_mels"] == 64
