"""Audio-CNN embeddings: speech_embedding with the real ONNX weights; VGGish and PANNs CNN14
with generated state dicts of the released shapes (their weights are not obtainable offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avemo.extract.audio.decode import decode_audio
from avemo.extract.audio.panns import PannsCnn14, build_cnn14
from avemo.extract.audio.speech_embedding import EMB_WEIGHTS, MEL_WEIGHTS, SpeechEmbedding
from avemo.extract.audio.vggish import Vggish, build_vggish, vggish_log_mel, vggish_mel_matrix
from avemo.extract.base import ClipInput
from avemo.extract.weights import MissingWeightsError


@pytest.fixture(scope="module")
def speech(media) -> np.ndarray:
    return decode_audio(media("sample.wav")).samples


# ----------------------------------------------------------------------------- speech_embedding


@pytest.fixture(scope="module")
def se() -> SpeechEmbedding:
    return SpeechEmbedding()


def test_speech_embedding_shape_rate_and_timestamps(se, speech, media):
    out = list(se.extract([ClipInput("s", audio=str(media("sample.wav")))]))[0]
    n_mel = (len(speech) - 512) // 160 + 1
    assert out.status == "ok" and out.values.shape == ((n_mel - 76) // 8 + 1, 96) == (366, 96)
    np.testing.assert_allclose(out.timestamps, 0.391 + 0.08 * np.arange(366), atol=1e-9)
    assert se.rate_hz == 12.5 and np.isfinite(out.values).all()
    w = se.provenance()["weights"]
    assert w == {MEL_WEIGHTS.name: MEL_WEIGHTS.sha256, EMB_WEIGHTS.name: EMB_WEIGHTS.sha256}


def test_speech_embedding_equals_openwakeword_reference(se, speech, tmp_path):
    """Our chain (scaling, 76-frame windows, step 8) against openwakeword 0.4.0's own
    ``AudioFeatures._get_embeddings``, loaded from the cached wheel (a test-time reference only)."""
    import sys
    import zipfile

    from avemo.data.pypi_fetch import cache_dir

    wheel = cache_dir() / "wheels" / "openwakeword-0.4.0-py3-none-any.whl"
    if not wheel.exists():
        pytest.skip(f"reference wheel not cached at {wheel}")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(
            tmp_path,
            [
                m
                for m in z.namelist()
                if m.endswith(".py") or m.endswith(("melspectrogram.onnx", "embedding_model.onnx"))
            ],
        )
    sys.path.insert(0, str(tmp_path))
    try:
        from openwakeword.utils import AudioFeatures
    finally:
        sys.path.remove(str(tmp_path))
    pcm = np.round(speech[16000 * 6 : 16000 * 10] * 32767).astype(np.int16)
    ref = AudioFeatures()._get_embeddings(pcm)
    for mod in [m for m in sys.modules if m.startswith("openwakeword")]:
        del sys.modules[mod]
    ((ours, _),) = se.compute([pcm.astype(np.float32) / 32767])
    assert ours.shape == ref.shape == (41, 96)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


def test_speech_embedding_deterministic_and_batch_independent(se, speech):
    clip = speech[16000 * 6 : 16000 * 10]
    loud = np.clip(speech[16000 * 10 : 16000 * 12] * 20, -1, 1)
    ((a, ta),) = se.compute([clip])
    ((b, tb),) = SpeechEmbedding().compute([clip])  # a fresh instance and sessions
    (c, tc), _ = se.compute([clip, loud])  # batched with a louder clip
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-4)
    assert np.array_equal(ta, tc)


def test_speech_embedding_varies_with_speech_not_with_silence(se, speech):
    x = np.concatenate([speech[16000 * 7 : 16000 * 11], np.zeros(16000 * 3, np.float32)])
    ((v, ts),) = se.compute([x])
    speech_rows, silent_rows = v[ts + 0.391 < 4.0], v[ts - 0.391 > 4.0]
    assert len(silent_rows) >= 10
    assert np.ptp(silent_rows, axis=0).max() < 1e-3  # same input window -> same vector
    assert np.std(speech_rows, axis=0).mean() > 0.1 * np.abs(speech_rows).mean()


def test_speech_embedding_short_clips(speech):
    ((v, ts),) = SpeechEmbedding().compute([speech[:3000]])
    assert v.shape == (1, 96) and ts.tolist() == [pytest.approx(0.391)]
    ((v0, t0),) = SpeechEmbedding({"pad_short": False}).compute([speech[:3000]])
    assert v0.shape == (0, 96) and len(t0) == 0
    fs = SpeechEmbedding({"step_frames": 4})
    assert fs.rate_hz == 25.0 and fs.compute([speech[:32000]])[0][0].shape == (31, 96)


# ----------------------------------------------------------------------------- VGGish


def _randomise_bn(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.fixture(scope="module")
def vggish_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "vggish_generated.pth"
    torch.save({"state_dict": build_vggish().state_dict()}, path)
    pca = path.with_name("pca.pth")
    q, _ = torch.linalg.qr(torch.randn(128, 128))
    torch.save({"pca_eigen_vectors": q, "pca_means": torch.randn(128, 1)}, pca)
    return path, pca


def test_vggish_mel_matrix_is_htk_triangles():
    w = vggish_mel_matrix()
    assert w.shape == (257, 64) and (w[0] == 0).all() and (w >= 0).all()
    freqs = np.linspace(0, 8000, 257)
    centres = freqs[w.argmax(axis=0)]
    assert (np.diff(centres) >= 0).all() and 125 < centres[0] < 200 and 7000 < centres[-1] < 7500
    assert (w[freqs < 125] == 0).all() and (w[freqs > 7500] == 0).all()
    assert w.max(axis=0).min() > 0.5  # every band peaks close to 1 at its nearest FFT bin


def test_vggish_frontend_tone_lands_in_its_band():
    t = np.arange(16000) / 16000
    mel = vggish_log_mel(np.sin(2 * np.pi * 1000 * t))
    assert mel.shape == (1 + (16000 - 400) // 160, 64)
    centres = np.linspace(0, 8000, 257)[vggish_mel_matrix().argmax(axis=0)]
    assert abs(centres[mel.mean(axis=0).argmax()] - 1000) < 60


def test_vggish_generated_weights_shapes_timestamps(vggish_file, monkeypatch, speech):
    monkeypatch.setenv("AVEMO_WEIGHTS_VGGISH", str(vggish_file[0]))
    x = speech[16000 * 6 : 16000 * 10]  # 4 s
    (v, ts), (v1, ts1) = Vggish().compute([x, x[:2000]])
    assert v.shape == (4, 128) and v1.shape == (1, 128)  # 4 s -> 4 non-overlapping 0.96 s patches
    np.testing.assert_allclose(ts, 0.4875 + 0.96 * np.arange(4))
    assert (v >= 0).all() and np.isfinite(v).all() and v.std() > 0
    fs = Vggish({"hop_s": 1 / 25, "center": True})
    ((vc, tc),) = fs.compute([x[:24000]])  # 1.5 s at 25 fps -> rows centred on 0, 0.04, ... 1.5
    assert vc.shape == (38, 128) and fs.rate_hz == 25.0
    np.testing.assert_allclose(tc, np.arange(38) / 25, atol=0.005)  # on the 10 ms frame grid
    ((again, _),) = fs.compute([x[:24000]])
    np.testing.assert_array_equal(again, vc)
    assert Vggish().provenance()["weights"]["vggish"]


def test_vggish_pca_postprocess(vggish_file, monkeypatch, speech):
    monkeypatch.setenv("AVEMO_WEIGHTS_VGGISH", str(vggish_file[0]))
    monkeypatch.setenv("AVEMO_WEIGHTS_VGGISH_PCA", str(vggish_file[1]))
    x = speech[16000 * 6 : 16000 * 8]
    ((p, _),) = Vggish({"postprocess": "pca"}).compute([x])
    ((q, _),) = Vggish({"postprocess": "quantized"}).compute([x])
    assert p.shape == (2, 128) and np.abs(p).max() <= 2.0
    assert q.min() >= 0 and q.max() <= 255 and np.array_equal(q, np.round(q))


def test_vggish_wrong_or_missing_weights_are_clear(tmp_path, monkeypatch, speech):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, bad)
    monkeypatch.setenv("AVEMO_WEIGHTS_VGGISH", str(bad))
    with pytest.raises(ValueError, match="does not fit the VGGish architecture"):
        Vggish().compute([speech[:16000]])
    monkeypatch.delenv("AVEMO_WEIGHTS_VGGISH")
    monkeypatch.setenv("AVEMO_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(MissingWeightsError, match="AVEMO_WEIGHTS_VGGISH"):
        Vggish().provenance()


# ----------------------------------------------------------------------------- PANNs CNN14


def test_panns_generated_checkpoint_shapes_timestamps(tmp_path, monkeypatch, media):
    torch.manual_seed(0)
    net = build_cnn14()
    _randomise_bn(net)
    sd = dict(net.state_dict())
    sd["spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(513, 1, 1024)  # dropped
    sd["logmel_extractor.melW"] = torch.zeros(513, 64)
    path = tmp_path / "cnn14_generated.pth"
    torch.save({"model": sd, "iteration": 0}, path)
    monkeypatch.setenv("AVEMO_WEIGHTS_PANNS_CNN14", str(path))
    fs = PannsCnn14()
    x = decode_audio(media("sample.wav"), sr=32000).samples[32000 * 7 : 32000 * 9 + 8000]  # 2.25 s
    (v, ts), (v1, ts1) = fs.compute([x, x[:5000]])
    assert v.shape == (3, 2048) and v1.shape == (1, 2048)
    np.testing.assert_allclose(ts, [0.5, 1.0, 1.5])
    assert np.isfinite(v).all() and (v >= 0).all() and v.std() > 0
    assert fs.rate_hz == 2.0 and fs.provenance()["config"]["sample_rate"] == 32000
    ((w, tw),) = PannsCnn14({"window_s": None}).compute([x])
    assert w.shape == (1, 2048) and tw[0] == pytest.approx(len(x) / 2 / 32000)
