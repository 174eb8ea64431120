"""Decoding: real speech, generated mp3 / aac / pcm / flac files (PyAV encoders), resampling
from 22.05 / 44.1 / 48 kHz against analytic signals, no-audio videos, empty and broken files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from avemo.extract.audio.decode import NoAudioError, clip_source, decode_audio, resample


def encode_audio(path: Path, x: np.ndarray, sr: int, codec: str, channels: int = 1) -> Path:
    """Encode mono float samples with a real PyAV encoder (mp3, aac, pcm_s16le, flac ...)."""
    layout = "mono" if channels == 1 else "stereo"
    data = np.tile(np.asarray(x, np.float32)[None], (channels, 1))
    with av.open(str(path), "w") as out:
        st = out.add_stream(codec, rate=sr, layout=layout)
        fmt = st.codec_context.codec.audio_formats[0].name
        frame_len = st.codec_context.frame_size or 1024
        conv = av.AudioResampler(format=fmt, layout=layout, rate=sr)
        for i in range(0, data.shape[1], frame_len):
            chunk = np.ascontiguousarray(data[:, i : i + frame_len])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sr
            frame.pts = i
            frame.time_base = Fraction(1, sr)
            for f in conv.resample(frame):
                out.mux(st.encode(f))
        for f in conv.resample(None):
            out.mux(st.encode(f))
        out.mux(st.encode(None))
    return path


def video_without_audio(path: Path, frames: int = 10) -> Path:
    with av.open(str(path), "w") as out:
        st = out.add_stream("mpeg4", rate=10)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = np.full((48, 64, 3), i * 20, np.uint8)
            out.mux(st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(st.encode(None))
    return path


def best_lag_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 4000) -> float:
    """Peak normalised cross-correlation of b against a within +-max_lag samples (codec delay)."""
    from scipy.signal import correlate

    n = min(len(a), len(b))
    core = a[max_lag : n - max_lag]
    xc = correlate(b[:n], core, mode="valid", method="fft")  # index k <-> b[k : k + len(core)]
    energy = np.sqrt(np.convolve(b[:n] ** 2, np.ones(len(core)), mode="valid"))
    return float((xc / (np.linalg.norm(core) * energy + 1e-12)).max())


@pytest.fixture(scope="module")
def speech(media) -> np.ndarray:
    return decode_audio(media("sample.wav")).samples


def test_sample_wav_decodes_as_16k_mono(media, speech):
    a = decode_audio(media("sample.wav"))
    assert a.sr == a.source_sr == 16000
    assert speech.dtype == np.float32 and speech.ndim == 1
    assert abs(a.duration - 30.0) < 0.05
    assert np.abs(speech).max() <= 1.0 and speech.std() > 1e-3


@pytest.mark.parametrize(
    "codec,suffix",
    [
        ("libmp3lame", ".mp3"),
        ("aac", ".m4a"),
        ("pcm_s16le", ".wav"),
        ("pcm_s16le", ".mkv"),
        ("flac", ".flac"),
    ],
)
def test_codecs_decode_to_the_same_speech(tmp_path, speech, codec, suffix):
    x = speech[16000 * 2 : 16000 * 7]  # 5 s of speech
    sr = 44100 if codec in ("libmp3lame", "aac") else 16000
    src = resample(x, 16000, sr)
    path = encode_audio(tmp_path / f"a{suffix}", src, sr, codec, channels=2)
    a = decode_audio(path)
    assert a.sr == 16000 and a.source_sr == sr
    assert abs(a.duration - 5.0) < 0.1  # encoder padding/priming is at most a few frames
    assert best_lag_correlation(x, a.samples) > 0.9


@pytest.mark.parametrize("sr_in", [22050, 44100, 48000])
def test_resampling_matches_analytic_signal_and_removes_aliases(tmp_path, sr_in):
    dur = 2.0
    t_in = np.arange(int(dur * sr_in)) / sr_in
    tones = lambda t: 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)  # noqa: E731
    alias = 0.3 * np.sin(2 * np.pi * 10000 * t_in)  # above the 8 kHz Nyquist of the output
    path = tmp_path / f"tone{sr_in}.wav"
    sf.write(path, (tones(t_in) + alias).astype(np.float32), sr_in, subtype="FLOAT")
    a = decode_audio(path, sr=16000)
    assert a.source_sr == sr_in and len(a.samples) == int(dur * 16000)
    want = tones(np.arange(len(a.samples)) / 16000)
    core = slice(1600, -1600)  # skip filter edges
    err = a.samples[core] - want[core]
    assert np.sqrt(np.mean(err**2)) < 1e-3, "in-band tones must survive, the 10 kHz tone must go"
    # the 10 kHz tone would alias to 6 kHz: check nothing is there
    spec = np.abs(np.fft.rfft(a.samples[core] * np.hanning(len(a.samples[core]))))
    freqs = np.fft.rfftfreq(len(a.samples[core]), 1 / 16000)
    near6k = spec[(freqs > 5900) & (freqs < 6100)].max()
    assert near6k < 1e-3 * spec.max()


def test_stereo_is_averaged(tmp_path):
    left = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    right = np.full(16000, 0.25, np.float32)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], 1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(decode_audio(path).samples, (left + right) / 2, atol=1e-6)


def test_video_audio_stream_and_video_without_audio(tmp_path, media):
    a = decode_audio(media("single_face.mp4"))
    assert a.sr == 16000 and 2.0 < a.duration < 3.0
    with pytest.raises(NoAudioError, match="no audio stream"):
        decode_audio(video_without_audio(tmp_path / "silent_video.mp4"))


def test_empty_missing_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(NoAudioError, match="0 samples"):
        decode_audio(empty)
    with pytest.raises(FileNotFoundError):
        decode_audio(tmp_path / "nope.wav")
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"this is not audio" * 100)
    with pytest.raises(Exception):  # noqa: B017 - any decoder error; statuses are tested elsewhere
        decode_audio(junk)
    with pytest.raises(NoAudioError):
        clip_source(None, None)


def test_emodb_file_decodes_to_2s(shared_data):
    wav = sorted((shared_data / "emodb-8spk" / "wav").glob("*.wav"))[0]
    a = decode_audio(wav)
    assert a.source_sr == 22050 and len(a.samples) == 32000


def test_audio_stream_start_offset_is_on_the_container_timeline(media):
    """face_noface.mov's audio stream starts 2.43 s after its video: rows follow that."""
    a = decode_audio(media("face_noface.mov"))
    assert a.start_s == pytest.approx(107164 / 44100)
    assert decode_audio(media("single_face.mp4")).start_s == 0.0
    from avemo.extract.audio.spectral import LogMel
    from avemo.extract.base import ClipInput

    (row,) = LogMel().extract([ClipInput("mov", video=str(media("face_noface.mov")))])
    assert row.status == "ok" and row.timestamps[0] == pytest.approx(a.start_s)
    np.testing.assert_allclose(np.diff(row.timestamps), 0.01)
