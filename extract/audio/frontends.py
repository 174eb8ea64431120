"""Spectrogram front-ends, twice: numpy (CPU) and torch (GPU, batched), with equal results.

Framing follows librosa's ``center=True, pad_mode="constant"``: the signal is zero-padded by
``n_fft // 2`` on both sides, frame ``t`` is *centred* on sample ``t * hop``, so its time stamp
is ``t * hop / sr`` (window centre) and a clip of ``n`` samples has ``1 + n // hop`` rows (a
clip shorter than one window still gives one row). The Hann window is periodic and
zero-padded (centred) to ``n_fft`` like librosa's. Mel filters are librosa's (Slaney scale and
area normalisation by default; ``htk`` and ``norm`` are configurable).

Outputs (float32, rows = frames):
* ``log_spectrogram``: ``log(|STFT| + eps)``, ``[T, n_fft // 2 + 1]``.
* ``log_mel``: ``log(mel_power + eps)``, ``[T, n_mels]`` (natural log, no per-clip reference,
  so values are comparable across clips).
* ``mfcc``: DCT-II (orthonormal) of ``10 log10(max(mel_power, amin))`` (librosa's
  ``power_to_db`` with ``top_db=None``), first ``n_mfcc`` coefficients incl. c0.
* ``deltas``: regression deltas over ``width`` frames with edge replication (HTK formula; equal
  to ``librosa.feature.delta(mode="nearest")`` for order 1); delta-delta = delta of delta.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

from avemo.extract.registry import AUDIO

MelNorm = Literal["slaney"] | None  # the config's mel_norm: librosa's area normalisation or none

# ----------------------------------------------------------------------------- shared pieces


def n_frames(n_samples: int, hop: int) -> int:
    """Rows of a centred STFT (librosa ``center=True``)."""
    return 1 + n_samples // hop


def frame_times(count: int, hop: int, sr: int) -> np.ndarray:
    """Window-centre time stamps (s) of ``count`` centred frames."""
    return np.arange(count, dtype=np.float64) * hop / sr


@lru_cache(maxsize=32)
def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann of ``win_length`` zero-padded (centred) to ``n_fft``."""
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    out = np.zeros(n_fft, np.float64)
    left = (n_fft - win_length) // 2
    out[left : left + win_length] = w
    return out


@lru_cache(maxsize=32)
def mel_filterbank(
    sr: int,
    n_fft: int,
    n_mels: int,
    fmin: float,
    fmax: float | None,
    htk: bool = False,
    norm: MelNorm = "slaney",
) -> np.ndarray:
    """librosa's mel matrix ``[n_mels, n_fft // 2 + 1]`` (float64)."""
    import librosa

    return librosa.filters.mel(
        sr=sr,
        n_fft=n_fft,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
        htk=htk,
        norm=norm,
        dtype=np.float64,
    )


@lru_cache(maxsize=8)
def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II basis ``[n_in, n_out]`` (``x @ D`` == scipy dct(type=2, norm="ortho"))."""
    k = np.arange(n_out)[None, :]
    n = np.arange(n_in)[:, None]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    d[:, 0] /= np.sqrt(2.0)
    return d


# ----------------------------------------------------------------------------- numpy (CPU)


@AUDIO.register("stft_magnitude", help="|STFT|, centred frames (numpy)")
def stft_magnitude_np(
    x: np.ndarray, n_fft: int, hop: int, win_length: int, chunk: int = 8192
) -> np.ndarray:
    """``|STFT|`` of a mono signal, ``[T, n_fft // 2 + 1]`` (float64), centred frames."""
    x = np.asarray(x, np.float64)
    pad = n_fft // 2
    xp = np.pad(x, (pad, pad))
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop]
    frames = frames[: n_frames(len(x), hop)]
    window = hann_window(win_length, n_fft)
    out = np.empty((len(frames), n_fft // 2 + 1), np.float64)
    for a in range(0, len(frames), chunk):  # bounded memory for hour-long clips
        out[a : a + chunk] = np.abs(np.fft.rfft(frames[a : a + chunk] * window, axis=-1))
    return out


def deltas_np(feat: np.ndarray, width: int = 9) -> np.ndarray:
    """Regression deltas along axis 0 (time) with edge replication."""
    n = width // 2
    if n < 1:
        raise ValueError("delta width must be >= 3")
    padded = np.pad(feat, [(n, n)] + [(0, 0)] * (feat.ndim - 1), mode="edge")
    t = len(feat)
    out = np.zeros_like(feat, dtype=np.float64)
    for k in range(1, n + 1):
        out += k * (padded[n + k : n + k + t] - padded[n - k : n - k + t])
    return out / (2 * sum(k * k for k in range(1, n + 1)))


def log_spectrogram_np(
    x: np.ndarray, sr: int, n_fft: int, hop: int, win_length: int, eps: float
) -> np.ndarray:
    return np.log(stft_magnitude_np(x, n_fft, hop, win_length) + eps).astype(np.float32)


def mel_power_np(
    x: np.ndarray,
    sr: int,
    n_fft: int,
    hop: int,
    win_length: int,
    n_mels: int,
    fmin: float,
    fmax: float | None,
    htk: bool,
    norm: MelNorm,
) -> np.ndarray:
    power = stft_magnitude_np(x, n_fft, hop, win_length) ** 2
    return power @ mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm).T


@AUDIO.register("log_mel", help="natural-log mel power (numpy)")
def log_mel_np(
    x: np.ndarray,
    sr: int,
    n_fft: int,
    hop: int,
    win_length: int,
    n_mels: int,
    fmin: float,
    fmax: float | None,
    htk: bool,
    norm: MelNorm,
    eps: float,
) -> np.ndarray:
    mel = mel_power_np(x, sr, n_fft, hop, win_length, n_mels, fmin, fmax, htk, norm)
    return np.log(mel + eps).astype(np.float32)


@AUDIO.register("mfcc", help="DCT-II of dB mel power (numpy)")
def mfcc_np(
    x: np.ndarray,
    sr: int,
    n_fft: int,
    hop: int,
    win_length: int,
    n_mels: int,
    fmin: float,
    fmax: float | None,
    htk: bool,
    norm: MelNorm,
    n_mfcc: int,
    amin: float,
) -> np.ndarray:
    mel = mel_power_np(x, sr, n_fft, hop, win_length, n_mels, fmin, fmax, htk, norm)
    db = 10.0 * np.log10(np.maximum(mel, amin))
    return (db @ dct_matrix(n_mels, n_mfcc)).astype(np.float32)


def stack_deltas_np(feat: np.ndarray, order: int, width: int) -> list[np.ndarray]:
    """``[static, delta, delta-delta][: order + 1]`` (float32)."""
    out = [np.asarray(feat, np.float64)]
    for _ in range(order):
        out.append(deltas_np(out[-1], width))
    return [o.astype(np.float32) for o in out]


# ----------------------------------------------------------------------------- torch (batched)


def _torch():
    import torch

    return torch


def pad_batch(signals: Sequence[np.ndarray], device: str = "cpu", dtype=None):
    """Zero-pad signals to one ``[B, N]`` tensor; returns (tensor, lengths)."""
    torch = _torch()
    dtype = dtype or torch.float32
    lengths = [len(s) for s in signals]
    out = torch.zeros(len(signals), max(max(lengths), 1), dtype=dtype)
    for i, s in enumerate(signals):
        if len(s):
            out[i, : len(s)] = torch.from_numpy(np.asarray(s, np.float32))
    return out.to(device), lengths


@AUDIO.register("stft_magnitude_torch", help="|STFT| of a padded batch (torch)")
def stft_magnitude_torch(x, n_fft: int, hop: int, win_length: int):
    """``|STFT|`` of a batch ``[B, N]`` -> ``[B, T, n_fft // 2 + 1]`` (centred, zero padding).

    Zero padding past a clip's end equals librosa's constant padding of that clip alone, so
    the first ``1 + len // hop`` rows of every clip match the per-clip numpy path.
    """
    torch = _torch()
    window = torch.as_tensor(hann_window(win_length, n_fft), dtype=x.dtype, device=x.device)
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spec.abs().transpose(1, 2)


def deltas_torch(feat, width: int = 9):
    """Regression deltas along dim 1 (time) of ``[B, T, F]`` with edge replication.

    In a padded batch, rows past a clip's end differ from the per-clip result only within
    ``width // 2`` rows of the end: callers compute deltas per clip on its own rows.
    """
    n = width // 2
    t = feat.shape[1]
    first, last = feat[:, :1], feat[:, -1:]
    padded = _torch().cat(
        [first.expand(-1, n, *feat.shape[2:]), feat, last.expand(-1, n, *feat.shape[2:])], dim=1
    )
    out = _torch().zeros_like(feat)
    for k in range(1, n + 1):
        out = out + k * (padded[:, n + k : n + k + t] - padded[:, n - k : n - k + t])
    return out / (2 * sum(k * k for k in range(1, n + 1)))


@AUDIO.register("mel_power_torch", help="mel power of a padded batch (torch)")
def mel_power_torch(
    x,
    sr: int,
    n_fft: int,
    hop: int,
    win_length: int,
    n_mels: int,
    fmin: float,
    fmax: float | None,
    htk: bool,
    norm: MelNorm,
):
    torch = _torch()
    power = stft_magnitude_torch(x, n_fft, hop, win_length) ** 2
    fb = torch.as_tensor(
        mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm), dtype=x.dtype, device=x.device
    )
    return power @ fb.T


def mfcc_from_mel_torch(mel, n_mfcc: int, amin: float):
    torch = _torch()
    db = 10.0 * torch.log10(torch.clamp(mel, min=amin))
    d = torch.as_tensor(dct_matrix(mel.shape[-1], n_mfcc), dtype=mel.dtype, device=mel.device)
    return db @ d
