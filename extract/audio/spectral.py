"""Spectrogram feature sets: ``spectrogram``, ``logmel``, ``mfcc`` (numpy on CPU, torch batched).

Rows are centred STFT frames, one per hop; ``timestamps[t] = t * hop / sr`` is the window
centre; a clip of ``n`` samples gives ``1 + n // hop`` rows (see ``frontends``). Row layouts:

* ``spectrogram``: ``[T, n_fft // 2 + 1]`` log magnitude (257 bins by default).
* ``logmel``: ``[T, n_mels]`` with ``deltas: 0``; with ``deltas: 1`` or ``2`` either
  ``delta_layout: channels`` -> ``[T, 1 + deltas, n_mels]`` (channel 0 static, 1 delta,
  2 delta-delta; what a 2-D CNN over [C, T, F] wants) or ``columns`` -> ``[T, (1 + deltas) *
  n_mels]`` (static | delta | delta-delta concatenated).
* ``mfcc``: ``[T, n_mfcc * (1 + deltas)]`` = 39 columns by default: 13 static (c0..c12),
  13 delta, 13 delta-delta.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from avemo.errors import FeatureConfigError
from avemo.extract.audio import frontends as F
from avemo.extract.audio.common import AudioFeatureSet, Result, ms_to_samples
from avemo.extract.base import Param
from avemo.extract.registry import FEATURE_SETS


class _StftSet(AudioFeatureSet):
    """Shared STFT geometry (window, hop, FFT size in samples)."""

    config_params = {
        "win_ms": Param(above=0, max=1000),
        "hop_ms": Param(above=0, max=1000),
        "n_fft": Param(min=2, max=65536),
        "log_eps": Param(above=0),
    }

    @property
    def win(self) -> int:
        return ms_to_samples(self.config["win_ms"], self.sample_rate)

    @property
    def hop(self) -> int:
        return ms_to_samples(self.config["hop_ms"], self.sample_rate)

    @property
    def n_fft(self) -> int:
        return int(self.config["n_fft"])

    @property
    def rate_hz(self) -> float:
        return self.sample_rate / self.hop

    def validate(self) -> None:
        super().validate()
        if self.hop < 1 or self.win < 2:
            raise FeatureConfigError(f"{self.name}: win_ms / hop_ms give less than 2 / 1 samples")
        if self.win > self.n_fft:
            raise FeatureConfigError(
                f"{self.name}: window ({self.win} samples) longer than n_fft "
                f"({self.n_fft}); raise n_fft"
            )
        if int(self.config.get("deltas", 0)) not in (0, 1, 2):
            raise FeatureConfigError(f"{self.name}: deltas must be 0, 1 or 2")
        if self.config.get("delta_layout", "columns") not in ("channels", "columns"):
            raise FeatureConfigError(f"{self.name}: delta_layout must be 'channels' or 'columns'")

    def _batch_rows(self, signals: Sequence[np.ndarray], per_clip_np, batch_torch) -> list[Result]:
        """Run the numpy function per clip, or the torch one on the padded batch."""
        if self.backend == "numpy":
            return [
                (
                    per_clip_np(s),
                    F.frame_times(F.n_frames(len(s), self.hop), self.hop, self.sample_rate),
                )
                for s in signals
            ]
        import torch

        with torch.inference_mode():
            x, lengths = F.pad_batch(signals, self.device)
            full = batch_torch(x)
            out = []
            for i, n in enumerate(lengths):
                rows = F.n_frames(n, self.hop)
                out.append(
                    (
                        self._finish_torch(full[i : i + 1, :rows])[0].float().cpu().numpy(),
                        F.frame_times(rows, self.hop, self.sample_rate),
                    )
                )
        return out

    def _finish_torch(self, feat):  # per-clip post-processing (deltas) on [1, T, F]
        return feat


@FEATURE_SETS.register("spectrogram")
class Spectrogram(_StftSet):
    """Speech spectrogram: log STFT magnitude (20 ms Hann, 10 ms hop, 512-point FFT -> 257 bins)."""

    default_config: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000,
        "win_ms": 20.0,
        "hop_ms": 10.0,
        "n_fft": 512,
        "log_eps": 1e-6,
    }

    def row_shape(self) -> tuple[int, ...]:
        return (self.n_fft // 2 + 1,)

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        eps = float(self.config["log_eps"])
        return self._batch_rows(
            signals,
            lambda s: F.log_spectrogram_np(
                s, self.sample_rate, self.n_fft, self.hop, self.win, eps
            ),
            lambda x: (F.stft_magnitude_torch(x, self.n_fft, self.hop, self.win) + eps).log(),
        )


class _MelSet(_StftSet):
    config_params = {
        "n_mels": Param(min=1, max=1024),
        "fmin": Param(min=0),
        "fmax": Param(types=(float,), above=0),
        "mel_norm": Param(choices=("slaney", None), nullable=True),
        "deltas": Param(choices=(0, 1, 2)),
        "delta_width": Param(min=3, max=99),
        "delta_layout": Param(choices=("channels", "columns")),
        "n_mfcc": Param(min=1),
        "amin": Param(above=0),
    }

    def validate(self) -> None:
        super().validate()
        c = self.config
        if c["fmax"] is not None and float(c["fmax"]) <= float(c["fmin"]):
            raise FeatureConfigError(
                f"{self.name}: fmax ({c['fmax']}) must be above fmin ({c['fmin']})"
            )
        if c["fmax"] is not None and float(c["fmax"]) > self.sample_rate / 2:
            raise FeatureConfigError(
                f"{self.name}: fmax ({c['fmax']}) must be <= sample_rate / 2 ({self.sample_rate / 2:g})"
            )
        if "n_mfcc" in c and int(c["n_mfcc"]) > int(c["n_mels"]):
            raise FeatureConfigError(
                f"{self.name}: n_mfcc ({c['n_mfcc']}) must be <= n_mels ({c['n_mels']})"
            )

    def _mel_args(self) -> tuple:
        c = self.config
        fmax = None if c["fmax"] is None else float(c["fmax"])
        return (
            self.sample_rate,
            self.n_fft,
            self.hop,
            self.win,
            int(c["n_mels"]),
            float(c["fmin"]),
            fmax,
            bool(c["htk"]),
            c["mel_norm"],
        )

    def _layout(self, parts: list) -> Any:
        """Stack static + deltas as documented (numpy arrays or torch tensors, time first)."""
        if len(parts) == 1:
            return parts[0]
        lib = np if isinstance(parts[0], np.ndarray) else __import__("torch")
        if self.config.get("delta_layout", "columns") == "channels":
            return lib.stack(parts, -2)
        return lib.concatenate(parts, -1) if lib is np else lib.cat(parts, -1)

    def _deltas_torch(self, feat):
        parts = [feat]
        for _ in range(int(self.config["deltas"])):
            parts.append(F.deltas_torch(parts[-1], int(self.config["delta_width"])))
        return self._layout(parts)


@FEATURE_SETS.register("logmel")
class LogMel(_MelSet):
    """Log-Mel spectrogram (64 bands, 25 ms window, 10 ms hop; optional delta / delta-delta)."""

    default_config: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000,
        "win_ms": 25.0,
        "hop_ms": 10.0,
        "n_fft": 512,
        "n_mels": 64,
        "fmin": 0.0,
        "fmax": None,
        "htk": False,
        "mel_norm": "slaney",
        "log_eps": 1e-10,
        "deltas": 0,
        "delta_width": 9,
        "delta_layout": "channels",
    }

    def row_shape(self) -> tuple[int, ...]:
        m, d = int(self.config["n_mels"]), int(self.config["deltas"])
        if d == 0:
            return (m,)
        return (1 + d, m) if self.config["delta_layout"] == "channels" else ((1 + d) * m,)

    def _np(self, s: np.ndarray) -> np.ndarray:
        feat = F.log_mel_np(s, *self._mel_args(), float(self.config["log_eps"]))
        return self._layout(
            F.stack_deltas_np(feat, int(self.config["deltas"]), int(self.config["delta_width"]))
        )

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        eps = float(self.config["log_eps"])
        return self._batch_rows(
            signals, self._np, lambda x: (F.mel_power_torch(x, *self._mel_args()) + eps).log()
        )

    def _finish_torch(self, feat):
        return self._deltas_torch(feat)


@FEATURE_SETS.register("mfcc")
class Mfcc(_MelSet):
    """13 MFCC + delta + delta-delta at 10 ms (39 columns; the LFAN audio input)."""

    default_config: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000,
        "win_ms": 25.0,
        "hop_ms": 10.0,
        "n_fft": 512,
        "n_mels": 40,
        "fmin": 0.0,
        "fmax": None,
        "htk": False,
        "mel_norm": "slaney",
        "n_mfcc": 13,
        "amin": 1e-10,
        "deltas": 2,
        "delta_width": 9,
    }

    def row_shape(self) -> tuple[int, ...]:
        return (int(self.config["n_mfcc"]) * (1 + int(self.config["deltas"])),)

    def _np(self, s: np.ndarray) -> np.ndarray:
        c = self.config
        feat = F.mfcc_np(s, *self._mel_args(), int(c["n_mfcc"]), float(c["amin"]))
        return self._layout(F.stack_deltas_np(feat, int(c["deltas"]), int(c["delta_width"])))

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        c = self.config
        return self._batch_rows(
            signals,
            self._np,
            lambda x: F.mfcc_from_mel_torch(
                F.mel_power_torch(x, *self._mel_args()), int(c["n_mfcc"]), float(c["amin"])
            ),
        )

    def _finish_torch(self, feat):
        return self._deltas_torch(feat)
