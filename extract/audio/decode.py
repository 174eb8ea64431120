"""Decode any clip's audio to one mono float32 signal at a fixed sample rate.

Sources: a separate audio file (soundfile for WAV/FLAC/OGG/AIFF, PyAV for everything else or
when libsndfile refuses the file) or the first audio stream of a video container (PyAV).
Channels are averaged (a plain mean: deterministic, no codec-specific downmix matrix).

Resampling uses soxr (``HQ``), chosen over PyAV's ``AudioResampler`` because it is
band-limited with high stop-band attenuation (librosa's default resampler), deterministic,
fast, and works on the numpy arrays from *both* decoders, so a WAV read by soundfile and the
same audio inside an MP4 go through the very same filter.

Time origin: a video container's audio stream may start later (or, with codec priming,
slightly earlier) than the container: ``start_s`` is the first decoded audio frame's time
relative to the container start, the same origin the video decoder uses for frame times, and
the feature sets add it to every row's time stamp so audio and video rows share one timeline.
Gaps inside a stream are not filled (samples are concatenated). Plain audio files start at 0.

Edge cases (documented contract): a container without an audio stream, or an audio stream
with 0 decoded samples, raises :class:`NoAudioError` (the feature sets turn it into status
``no_audio``). Silence and very short signals decode normally; what the front-ends make of
them is documented there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".w64"}


class NoAudioError(RuntimeError):
    """The source has no audio stream, or the stream holds no samples."""


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1] at ``sr``; ``source_sr`` is the file's own rate."""

    samples: np.ndarray
    sr: int
    source_sr: int
    path: str
    start_s: float = 0.0  # first sample's time on the container timeline (s)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sr


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling with soxr (HQ); a no-op when the rates match."""
    if sr_in == sr_out or len(x) == 0:
        return np.ascontiguousarray(x, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(x, np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def _read_soundfile(path: Path) -> tuple[np.ndarray, int, float]:
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [n, channels]
    return data.mean(axis=1), int(sr), 0.0


def _read_pyav(path: Path) -> tuple[np.ndarray, int, float]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise NoAudioError(f"{path.name}: no audio stream")
        stream = container.streams.audio[0]
        # Format conversion only (layout and rate kept): planar float32 [channels, n].
        conv = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        sr = stream.codec_context.sample_rate or stream.rate
        origin = container.start_time / 1e6 if container.start_time is not None else 0.0
        start_s = None
        for frame in container.decode(stream):
            sr = frame.sample_rate or sr
            if start_s is None and frame.time is not None:
                start_s = float(frame.time) - origin
            for out in conv.resample(frame):
                chunks.append(out.to_ndarray().mean(axis=0))
        for out in conv.resample(None):
            chunks.append(out.to_ndarray().mean(axis=0))
    if not sr:
        raise NoAudioError(f"{path.name}: audio stream has no sample rate")
    x = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return x, int(sr), start_s or 0.0


def decode_audio(path: str | os.PathLike[str], sr: int = 16000) -> DecodedAudio:
    """Mono float32 at ``sr``. Raises NoAudioError (no stream / 0 samples), OSError, av errors."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"audio source not found: {p}")
    x = None
    if p.suffix.lower() in SOUNDFILE_SUFFIXES:
        try:
            x, src_sr, start_s = _read_soundfile(p)
        except Exception:  # noqa: BLE001 - libsndfile refuses some valid files; PyAV decides
            x = None
    if x is None:
        x, src_sr, start_s = _read_pyav(p)
    if len(x) == 0:
        raise NoAudioError(f"{p.name}: audio stream is empty (0 samples)")
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return DecodedAudio(resample(x, src_sr, sr), sr, src_sr, str(p), start_s)


def clip_source(audio: str | None, video: str | None) -> str:
    """The file a clip's audio comes from: its audio file if given, else its video."""
    src = audio or video
    if not src:
        raise NoAudioError("clip has neither an audio nor a video path")
    return src
