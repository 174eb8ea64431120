"""VGGish (Hershey et al. 2017): 128-d embedding per 0.96 s log-mel patch, hop configurable.

Architecture and input follow the released model (TF ``vggish_input`` / torchvggish), with
parameter names of the torchvggish state dict (``features.N`` / ``embeddings.N``) so its
``vggish-10086976.pth`` loads unchanged:

* input: 16 kHz; |STFT| of 25 ms periodic-Hann frames (400 samples, 512-point FFT) every 10 ms,
  *not* centred (frame ``i`` covers samples ``[160 i, 160 i + 400)``); 64 HTK-mel bands
  125-7500 Hz with triangles linear on the mel scale (DC bin unused); ``log(mel + 0.01)``.
* one example = 96 frames (0.975 s of samples); examples start every ``hop_s`` (rounded to the
  10 ms frame grid). ``hop_s: 0.96`` is the released non-overlapping setting; ``1 / fps`` gives
  one row per video frame (LFAN).
* time stamps: the example centre, ``start + 0.4875 s``. With ``center: true`` the clip is
  zero-padded by 0.4875 s on both sides so example ``k`` is centred on ``~k * hop_s`` (exact
  stamps are recorded), and every clip with audio gets ``floor(duration / hop_s) + 1`` rows.
* ``postprocess``: ``none`` (128-d ReLU output), ``pca`` (the AudioSet PCA + clip to [-2, 2];
  needs ``vggish_pca``), ``quantized`` (additionally 8-bit, as in the AudioSet release).

Weights: a user file (``AVEMO_WEIGHTS_VGGISH``) or the torchvggish release URL when online.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property, lru_cache
from typing import Any, ClassVar

import numpy as np

from avemo.errors import FeatureConfigError
from avemo.extract.audio.cnn_common import load_into, load_state_dict, window_starts
from avemo.extract.audio.common import AudioFeatureSet, Result
from avemo.extract.base import Param
from avemo.extract.registry import AUDIO, FEATURE_SETS
from avemo.extract.weights import WeightSpec, checksum, register_weight, resolve

_REL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
VGGISH_WEIGHTS = register_weight(
    WeightSpec(
        "vggish",
        "vggish-10086976.pth",
        None,
        url=_REL + "vggish-10086976.pth",
        licence="Apache-2.0",
        note="torchvggish port of the AudioSet VGGish; any state dict with the same keys works.",
    )
)
PCA_WEIGHTS = register_weight(
    WeightSpec(
        "vggish_pca",
        "vggish_pca_params-970ea276.pth",
        None,
        url=_REL + "vggish_pca_params-970ea276.pth",
        licence="Apache-2.0",
        note="keys pca_eigen_vectors [128, 128], pca_means [128] (only for postprocess: pca).",
    )
)

SR, WIN, HOP, NFFT, N_MELS, EXAMPLE_FRAMES = 16000, 400, 160, 512, 64, 96
LOG_OFFSET = 0.01
EXAMPLE_HALF_S = ((EXAMPLE_FRAMES - 1) * HOP + WIN) / 2 / SR  # 0.4875 s
EMB_DIM = 128


def hz_to_mel_htk(f):
    return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)


@lru_cache(maxsize=4)
def vggish_mel_matrix(
    sr: int = SR, n_fft: int = NFFT, n_mels: int = N_MELS, fmin: float = 125.0, fmax: float = 7500.0
) -> np.ndarray:
    """``[n_fft // 2 + 1, n_mels]``: triangles linear in HTK mel, DC bin zeroed."""
    bins_mel = hz_to_mel_htk(np.linspace(0.0, sr / 2, n_fft // 2 + 1))[:, None]
    edges = np.linspace(hz_to_mel_htk(fmin), hz_to_mel_htk(fmax), n_mels + 2)
    lo, mid, hi = edges[:-2][None], edges[1:-1][None], edges[2:][None]
    w = np.maximum(0.0, np.minimum((bins_mel - lo) / (mid - lo), (hi - bins_mel) / (hi - mid)))
    w[0] = 0.0
    return w


def vggish_log_mel(x: np.ndarray) -> np.ndarray:
    """``[F, 64]`` VGGish input frames of a 16 kHz signal (``F = 1 + (n - 400) // 160``)."""
    if len(x) < WIN:
        return np.zeros((0, N_MELS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(x, np.float64), WIN)[::HOP]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)
    mag = np.abs(np.fft.rfft(frames * hann, NFFT, axis=-1))
    return np.log(mag @ vggish_mel_matrix() + LOG_OFFSET).astype(np.float32)


@AUDIO.register("vggish", help="VGGish network, [B, 1, 96, 64] -> [B, 128]")
def build_vggish():
    """The VGGish network (torch); input ``[B, 1, 96, 64]`` -> ``[B, 128]``."""
    import torch
    from torch import nn

    class VGGish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            cin = 1
            for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                    cin = int(v)
            self.features = nn.Sequential(*layers)
            self.embeddings = nn.Sequential(
                nn.Linear(512 * 4 * 6, 4096),
                nn.ReLU(True),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Linear(4096, EMB_DIM),
                nn.ReLU(True),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)  # [B, 512, 6, 4]
            # flatten in (time, freq, channel) order, as the TF model (NHWC) did
            return self.embeddings(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))

    return VGGish()


@FEATURE_SETS.register("vggish")
class Vggish(AudioFeatureSet):
    """VGGish: 128-d per 0.96 s log-mel patch, hop configurable (e.g. 1/fps)."""

    default_config: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000,
        "hop_s": 0.96,
        "center": False,
        "pad_short": True,
        "postprocess": "none",
        "batch_size": 64,
    }
    config_params = {
        "hop_s": Param(min=0.01),
        "postprocess": Param(choices=("none", "pca", "quantized")),
    }

    def validate(self) -> None:
        super().validate()
        if self.sample_rate != SR:
            raise FeatureConfigError("vggish: the model is fixed to 16 kHz input")
        if float(self.config["hop_s"]) < 0.01:
            raise FeatureConfigError("vggish: hop_s must be >= 0.01 (one frame)")
        if self.config["postprocess"] not in ("none", "pca", "quantized"):
            raise FeatureConfigError("vggish: postprocess must be none, pca or quantized")

    @property
    def rate_hz(self) -> float:
        return 1.0 / float(self.config["hop_s"])

    def row_shape(self) -> tuple[int, ...]:
        return (EMB_DIM,)

    def _weight_names(self) -> list[str]:
        return [VGGISH_WEIGHTS.name] + (
            [PCA_WEIGHTS.name] if self.config["postprocess"] != "none" else []
        )

    @cached_property
    def _paths(self) -> dict:
        return {n: resolve(n) for n in self._weight_names()}

    def weights(self) -> dict[str, str]:
        return {n: checksum(p) for n, p in self._paths.items()}

    @cached_property
    def net(self):
        net = build_vggish()
        path = self._paths[VGGISH_WEIGHTS.name]
        load_into(net, load_state_dict(path), "VGGish", path)
        return net.eval().to(self.device)

    @cached_property
    def pca(self) -> tuple[np.ndarray, np.ndarray]:
        path = self._paths[PCA_WEIGHTS.name]
        sd = load_state_dict(path)
        try:
            vec = np.asarray(sd["pca_eigen_vectors"], np.float64).reshape(EMB_DIM, EMB_DIM)
            mean = np.asarray(sd["pca_means"], np.float64).reshape(EMB_DIM)
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: not VGGish PCA parameters ({e})") from None
        return vec, mean

    def _postprocess(self, emb: np.ndarray) -> np.ndarray:
        if self.config["postprocess"] == "none":
            return emb
        vec, mean = self.pca
        out = np.clip((emb - mean) @ vec.T, -2.0, 2.0)
        if self.config["postprocess"] == "quantized":
            out = np.round((out + 2.0) * (255.0 / 4.0))
        return out

    def _examples(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hop_frames = float(self.config["hop_s"]) * SR / HOP
        pad = 0
        if self.config["center"]:
            pad = int(round(EXAMPLE_HALF_S * SR))
            x = np.pad(x, (pad, pad + HOP))  # + one hop: the last rounded start always fits
        elif self.config["pad_short"] and 0 < len(x) < (EXAMPLE_FRAMES - 1) * HOP + WIN:
            x = np.pad(x, (0, (EXAMPLE_FRAMES - 1) * HOP + WIN - len(x)))
        mel = vggish_log_mel(x)
        starts = window_starts(len(mel), EXAMPLE_FRAMES, hop_frames, pad_short=False)
        if self.config["center"]:
            n_rows = (
                int(np.floor((len(x) - 2 * pad - HOP) / SR / float(self.config["hop_s"]) + 1e-9))
                + 1
            )
            starts = starts[:n_rows]
        view = np.lib.stride_tricks.sliding_window_view(mel, EXAMPLE_FRAMES, axis=0)
        ex = (
            view[starts].transpose(0, 2, 1)
            if len(starts)
            else np.zeros((0, EXAMPLE_FRAMES, N_MELS))
        )
        times = (starts * HOP - pad) / SR + EXAMPLE_HALF_S
        return ex.astype(np.float32), times

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        import torch

        per = [self._examples(s) for s in signals]
        allex = (
            np.concatenate([e for e, _ in per]) if per else np.zeros((0, EXAMPLE_FRAMES, N_MELS))
        )
        outs = []
        bs = int(self.config["batch_size"])
        with torch.inference_mode():
            for i in range(0, len(allex), bs):
                xb = torch.from_numpy(np.ascontiguousarray(allex[i : i + bs]))[:, None].to(
                    self.device
                )
                outs.append(self.net(xb).float().cpu().numpy())
        emb = (
            self._postprocess(np.concatenate(outs).astype(np.float64))
            if outs
            else np.zeros((0, EMB_DIM))
        )
        res, at = [], 0
        for ex, times in per:
            res.append((emb[at : at + len(ex)].astype(np.float32), times))
            at += len(ex)
        return res
