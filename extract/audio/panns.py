"""PANNs CNN14 (Kong et al. 2020): 2048-d AudioSet embedding per window.

Architecture as the released ``Cnn14`` (parameter names match ``Cnn14_mAP=0.431.pth``, so that
checkpoint loads unchanged): 32 kHz; log-mel front-end (1024-point Hann STFT every 320
samples, centred with reflect padding, power, 64 Slaney mel bands 50-14000 Hz,
``10 log10(max(x, 1e-10))``); ``bn0`` over mel bins; six conv blocks (2 x [3x3 conv, BN, ReLU],
2x2 average pooling, 1x1 for the last) with 64..2048 channels; mean over frequency; max + mean
pooling over time; ``fc1`` + ReLU -> the 2048-d embedding (``fc_audioset`` is kept so the
checkpoint loads, but its 527 tag scores are not used). The checkpoint's own front-end
tensors (``spectrogram_extractor.*``, ``logmel_extractor.*``: STFT as conv kernels and the
librosa mel matrix) are dropped: ours computes the same transform with ``torch.stft``.

Rows: the clip is cut into windows of ``window_s`` every ``hop_s``; each window's waveform goes
through front-end and network; the time stamp is the window centre. A clip shorter than one
window is zero-padded to one window (``pad_short``) -> one row. ``window_s: null`` embeds
the whole clip as one row (stamp: clip centre).

Weights: a user file (``AVEMO_WEIGHTS_PANNS_CNN14``) or the Zenodo record when online.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from avemo.errors import FeatureConfigError
from avemo.extract.audio import frontends as F
from avemo.extract.audio.cnn_common import load_into, load_state_dict, window_starts
from avemo.extract.audio.common import AudioFeatureSet, Result
from avemo.extract.base import Param
from avemo.extract.registry import AUDIO, FEATURE_SETS
from avemo.extract.weights import WeightSpec, checksum, register_weight, resolve

CNN14_WEIGHTS = register_weight(
    WeightSpec(
        "panns_cnn14",
        "Cnn14_mAP=0.431.pth",
        None,
        url="https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1",
        licence="MIT (audioset_tagging_cnn); checkpoint on Zenodo record 3987831",
        note="{'model': state_dict} checkpoint of the released Cnn14 (32 kHz).",
    )
)

SR, NFFT, HOP, N_MELS, FMIN, FMAX = 32000, 1024, 320, 64, 50.0, 14000.0
EMB_DIM = 2048
_FRONTEND_KEYS = ("spectrogram_extractor.", "logmel_extractor.")


@AUDIO.register("panns_cnn14", help="PANNs CNN14 network, [B, 1, T, 64] -> [B, 2048]")
def build_cnn14(classes: int = 527):
    """CNN14 on log-mel input ``[B, 1, T, 64]`` -> ``(embedding [B, 2048], logits [B, classes])``."""
    import torch
    import torch.nn.functional as Fn
    from torch import nn

    class ConvBlock(nn.Module):
        def __init__(self, cin: int, cout: int, pool: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.pool = pool

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = Fn.relu(self.bn1(self.conv1(x)))
            x = Fn.relu(self.bn2(self.conv2(x)))
            return Fn.avg_pool2d(x, self.pool) if self.pool > 1 else x

    class Cnn14(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn0 = nn.BatchNorm2d(N_MELS)
            chans = (1, 64, 128, 256, 512, 1024, 2048)
            for i in range(6):
                setattr(
                    self, f"conv_block{i + 1}", ConvBlock(chans[i], chans[i + 1], 2 if i < 5 else 1)
                )
            self.fc1 = nn.Linear(2048, 2048)
            self.fc_audioset = nn.Linear(2048, classes)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise each mel bin
            for i in range(6):
                x = getattr(self, f"conv_block{i + 1}")(x)
            x = x.mean(dim=3)  # over frequency -> [B, C, T]
            # max + mean over time, unsmoothed: the 3-frame pooling belongs to the SED variants
            x = x.max(dim=2).values + x.mean(dim=2)
            emb = Fn.relu(self.fc1(x))
            return emb, self.fc_audioset(emb)

    return Cnn14()


def cnn14_log_mel(x):
    """``[B, N]`` 32 kHz waveforms (torch) -> ``[B, 1, T, 64]`` CNN14 input."""
    import torch

    window = torch.hann_window(NFFT, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.stft(
        x, NFFT, HOP, NFFT, window, center=True, pad_mode="reflect", return_complex=True
    )
    fb = torch.as_tensor(
        F.mel_filterbank(SR, NFFT, N_MELS, FMIN, FMAX), dtype=x.dtype, device=x.device
    )
    mel = (spec.abs() ** 2).transpose(1, 2) @ fb.T
    return (10.0 * torch.log10(torch.clamp(mel, min=1e-10)))[:, None]


@FEATURE_SETS.register("panns_cnn14")
class PannsCnn14(AudioFeatureSet):
    """PANNs CNN14: 2048-d AudioSet embedding per window (default 1 s every 0.5 s)."""

    default_config: ClassVar[dict[str, Any]] = {
        "sample_rate": 32000,
        "window_s": 1.0,
        "hop_s": 0.5,
        "pad_short": True,
        "batch_size": 16,
        # the released Cnn14's pooling (max + mean over time, unsmoothed); recorded so a cache made
        # before 2026-12-06 (which smoothed first, ~2x off the reference) is refused, not mixed
        "pooling": "max_mean",
    }
    config_params = {
        "window_s": Param(types=(float,), min=0.35, nullable=True),
        "hop_s": Param(above=0),
        "pooling": Param(choices=("max_mean",)),
    }

    def validate(self) -> None:
        super().validate()
        if self.sample_rate != SR:
            raise FeatureConfigError("panns_cnn14: the model is fixed to 32 kHz input")
        w = self.config["window_s"]
        if w is not None and float(w) < 0.35:
            raise FeatureConfigError(
                "panns_cnn14: window_s must be >= 0.35 s (the network pools 32x in time)"
            )

    @property
    def rate_hz(self) -> float | None:
        return None if self.config["window_s"] is None else 1.0 / float(self.config["hop_s"])

    def row_shape(self) -> tuple[int, ...]:
        return (EMB_DIM,)

    @cached_property
    def _path(self):
        return resolve(CNN14_WEIGHTS.name)

    def weights(self) -> dict[str, str]:
        return {CNN14_WEIGHTS.name: checksum(self._path)}

    @cached_property
    def net(self):
        net = build_cnn14()
        load_into(
            net,
            load_state_dict(self._path, drop_prefixes=_FRONTEND_KEYS),
            "PANNs CNN14",
            self._path,
        )
        return net.eval().to(self.device)

    def _windows(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        if self.config["window_s"] is None:
            win = max(len(x), int(0.35 * SR))
            return [np.pad(x, (0, win - len(x)))], np.array([len(x) / 2 / SR])
        win = int(round(float(self.config["window_s"]) * SR))
        hop = float(self.config["hop_s"]) * SR
        if 0 < len(x) < win and self.config["pad_short"]:
            x = np.pad(x, (0, win - len(x)))
        starts = window_starts(len(x), win, hop, pad_short=False)
        return [x[s : s + win] for s in starts], (starts + win / 2) / SR

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        import torch

        res = []
        bs = int(self.config["batch_size"])
        with torch.inference_mode():
            for s in signals:  # windows of one clip share a length; batch them
                wins, times = self._windows(s)
                embs = []
                for i in range(0, len(wins), bs):
                    xb = torch.from_numpy(np.stack(wins[i : i + bs]).astype(np.float32)).to(
                        self.device
                    )
                    embs.append(self.net(cnn14_log_mel(xb))[0].float().cpu().numpy())
                emb = np.concatenate(embs) if embs else np.zeros((0, EMB_DIM), np.float32)
                res.append((emb, times))
        return res
