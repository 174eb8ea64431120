"""Front-end parity (ours vs librosa; torch path vs numpy path) and value sanity on real speech."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from avemo.extract.audio import frontends as F
from avemo.extract.audio.decode import decode_audio
from avemo.extract.audio.spectral import LogMel, Mfcc, Spectrogram


@pytest.fixture(scope="module")
def speech(media) -> np.ndarray:
    return decode_audio(media("sample.wav")).samples[
        : 16000 * 12
    ]  # 0-6.5 s near-silent, then speech


def _librosa_mel(x, sr=16000, n_mels=64):
    return librosa.feature.melspectrogram(
        y=x.astype(np.float64),
        sr=sr,
        n_fft=512,
        hop_length=160,
        win_length=400,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=n_mels,
    ).T


def test_logmel_equals_librosa(speech):
    ((ours, ts),) = LogMel().compute([speech])
    ref = np.log(_librosa_mel(speech) + 1e-10)
    assert ours.shape == ref.shape == (1 + len(speech) // 160, 64)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_spectrogram_equals_librosa(speech):
    ((ours, _),) = Spectrogram().compute([speech])
    ref = np.abs(
        librosa.stft(
            speech.astype(np.float64),
            n_fft=512,
            hop_length=160,
            win_length=320,
            center=True,
            pad_mode="constant",
        )
    ).T
    assert ours.shape == (1 + len(speech) // 160, 257)
    np.testing.assert_allclose(ours, np.log(ref + 1e-6), atol=1e-3)


def test_mfcc_and_deltas_equal_librosa(speech):
    ((ours, _),) = Mfcc().compute([speech])
    db = librosa.power_to_db(_librosa_mel(speech, n_mels=40).T, top_db=None)
    ref = librosa.feature.mfcc(S=db, n_mfcc=13).T
    d1 = librosa.feature.delta(ref, width=9, order=1, axis=0, mode="nearest")
    d2 = librosa.feature.delta(d1, width=9, order=1, axis=0, mode="nearest")
    assert ours.shape == (len(ref), 39)
    np.testing.assert_allclose(ours[:, :13], ref, rtol=1e-4, atol=5e-3)
    np.testing.assert_allclose(ours[:, 13:26], d1, rtol=1e-4, atol=5e-3)
    np.testing.assert_allclose(ours[:, 26:], d2, rtol=1e-4, atol=5e-3)


def test_deltas_hand_computed():
    x = np.array([[0.0], [1.0], [4.0], [9.0]])  # width 3: (x[t+1] - x[t-1]) / 2, edges replicated
    np.testing.assert_allclose(F.deltas_np(x, width=3)[:, 0], [0.5, 2.0, 4.0, 2.5])


CASES = [
    ("spectrogram", Spectrogram, {}),
    ("logmel", LogMel, {}),
    ("logmel+deltas", LogMel, {"deltas": 2}),
    ("logmel+cols", LogMel, {"deltas": 1, "delta_layout": "columns"}),
    ("mfcc", Mfcc, {}),
]


@pytest.mark.parametrize("label,cls,cfg", CASES, ids=[c[0] for c in CASES])
def test_torch_path_equals_numpy_path_batched(speech, label, cls, cfg):
    signals = [speech, speech[1000:2500], np.zeros(4000, np.float32), speech[:37]]
    ref = cls(cfg, backend="numpy").compute(signals)
    got = cls(cfg, backend="torch").compute(signals)
    for (a, ta), (b, tb) in zip(ref, got, strict=True):
        assert a.shape == b.shape and a.shape[1:] == cls(cfg).row_shape()
        np.testing.assert_array_equal(ta, tb)
        if cls is Mfcc:
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())
        else:  # logs of float32 STFTs: compare linear values, error relative to the clip's peak
            np.testing.assert_allclose(np.exp(b), np.exp(a), rtol=1e-3, atol=1e-6 * np.exp(a).max())
            loud = a > a.max() - np.log(1e4)  # within 80 dB (magnitude) / 40 dB (power) of peak
            np.testing.assert_allclose(b[loud], a[loud], atol=2e-3)


def test_timestamps_are_window_centres_and_short_clips_give_one_row():
    fs = LogMel()
    (v, ts), (v1, ts1), (v0, ts0) = fs.compute(
        [np.zeros(16000, np.float32), np.ones(100, np.float32) * 0.1, np.zeros(1, np.float32)]
    )
    assert len(v) == 101 and ts[0] == 0.0 and ts[1] == pytest.approx(0.01)
    assert ts[-1] == pytest.approx(1.0)
    assert v1.shape == (1, 64) and ts1.tolist() == [0.0] and v0.shape == (1, 64)
    np.testing.assert_allclose(v, np.log(1e-10), rtol=1e-6)  # silence -> log(eps), finite
    assert fs.rate_hz == 100.0


def test_logmel_energy_higher_in_speech_than_in_silence(speech):
    """sample.wav is room noise for its first ~6.5 s, then speech; we also append digital silence."""
    x = np.concatenate([speech, np.zeros(16000, np.float32)])
    ((v, ts),) = LogMel().compute([x])
    energy = np.log(np.exp(v).sum(axis=1))  # log of total mel power per row
    speech_rows = energy[(ts > 7.0) & (ts < 11.5)]
    room_rows = energy[ts < 6.0]
    digital_silence = energy[ts > len(speech) / 16000 + 0.05]
    assert np.median(speech_rows) > np.percentile(room_rows, 99) + 3.0  # > 20x the power
    assert room_rows.min() > digital_silence.max() + 3.0
    np.testing.assert_allclose(v[ts > len(speech) / 16000 + 0.05], np.log(1e-10), rtol=1e-6)


def test_chunked_numpy_stft_equals_one_shot(speech):
    a = F.stft_magnitude_np(speech[:48000], 512, 160, 400)
    b = F.stft_magnitude_np(speech[:48000], 512, 160, 400, chunk=37)
    np.testing.assert_array_equal(a, b)
