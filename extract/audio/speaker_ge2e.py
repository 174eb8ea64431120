"""GE2E speaker encoder (Wan et al. 2018): a 256-d d-vector per 1.6 s partial window.

Speaker embeddings are a known paralinguistic input to speech emotion recognition; the
weights are the ``pretrained.pt`` of the resemblyzer 0.1.4 wheel (Apache-2.0), a state dict
read with ``weights_only=True`` (its GE2E loss scalars ``similarity_*`` and the optimiser state
are not used). Chain, as that encoder was trained (learnt from reading resemblyzer 0.1.4):

1. 16 kHz mono; ``normalize_volume`` scales the clip up to an RMS of -30 dBFS, never down
   (default on: the encoder only ever saw such input, and its input is mel *power*, not log,
   so a quiet clip gives smaller numbers all through the LSTM, not just an offset). Silence
   is left as it is. Voice-activity trimming is *not* applied: it would move rows off the
   clip's timeline, and acted corpus clips (EmoDB, RAVDESS) are short speech.
2. Partial windows of 160 mel frames (1.6 s), one every ``round(100 / rate)`` frames; window
   ``j`` starts at frame ``j * step`` while ``start <= n_frames - 160 + step`` with
   ``n_frames = 1 + n // 160``; the last window is dropped when it holds less than
   ``min_coverage`` of real samples and is not the only one, so every clip with audio has >= 1
   row. The clip is zero-padded to the last window's end.
3. Mel power: 25 ms periodic Hann (400 samples), 10 ms hop, centred frames with zero padding,
   40 Slaney mel bands 0-8 kHz (``librosa.feature.melspectrogram`` with those settings), as
   ``[frames, 40]`` (``frontends.mel_power_np`` of the padded clip).
4. 3-layer LSTM (40 -> 256) over each window; the last layer's final hidden state -> Linear
   (256, 256) -> ReLU -> L2 normalisation. Windows of all clips go through the LSTM together
   (it runs per window, so batching changes no numbers).

Rows: one embedding per window; ``timestamps[j] = (start_j + 79.5) * 0.01 s`` = the centre of
its 160 frame centres (``0.795 + 0.01 * start``; resemblyzer's ``wav_slices`` midpoint is
5 ms later). Rate ``100 / step`` Hz (1.2987 Hz for the default ``rate: 1.3``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from avemo.extract.audio import frontends as F
from avemo.extract.audio.cnn_common import load_into
from avemo.extract.audio.common import AudioFeatureSet, Result
from avemo.extract.base import Param
from avemo.extract.registry import AUDIO, FEATURE_SETS
from avemo.extract.weights import WeightSpec, checksum, register_weight, resolve

GE2E_WEIGHTS = register_weight(
    WeightSpec(
        "speaker_ge2e",
        "resemblyzer_pretrained.pt",
        "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
        package="resemblyzer",
        version="0.1.4",
        member="resemblyzer/pretrained.pt",
        licence="Apache-2.0",
        note="GE2E speaker encoder of resemblyzer 0.1.4 ({'model_state': state_dict}).",
    )
)

SR, N_FFT, HOP, N_MELS = 16000, 400, 160, 40
WINDOW_FRAMES = 160  # 1.6 s partial utterances, as the encoder was trained
HIDDEN, LAYERS, EMB_DIM = 256, 3, 256
TARGET_DBFS = -30.0
#: Windows per LSTM call: a memory bound (~0.4 GB of LSTM outputs), not a numeric setting;
#: corpus batches (EmoDB: ~3 windows a clip) go through in one call.
MAX_WINDOWS_PER_CALL = 2048


def normalize_volume(x: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """``x`` scaled so that its RMS is ``target_dbfs`` re full scale, only ever up.

    A silent clip has no level to scale from and is returned unchanged (finite rows).
    """
    rms = float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64))))) if len(x) else 0.0
    if rms == 0.0:
        return x
    gain = 10.0 ** (target_dbfs / 20.0) / rms
    return (np.asarray(x, np.float32) * np.float32(gain)) if gain > 1.0 else x


def frame_step(rate: float) -> int:
    """Frames between window starts for ``rate`` windows per second (10 ms frame grid)."""
    return int(np.round(SR / rate / HOP))


def window_starts(n_samples: int, step: int, min_coverage: float) -> np.ndarray:
    """First mel frame of every partial window of an ``n_samples`` clip (see the module doc)."""
    frames = F.n_frames(n_samples, HOP)
    starts = np.arange(0, max(1, frames - WINDOW_FRAMES + step + 1), step, dtype=np.int64)
    real = (n_samples - starts[-1] * HOP) / (WINDOW_FRAMES * HOP)  # share of the last window
    if len(starts) > 1 and real < min_coverage:
        starts = starts[:-1]
    return starts


def window_times(starts: np.ndarray) -> np.ndarray:
    """Window centres (s): the middle of the window's 160 centred frames."""
    return (starts + (WINDOW_FRAMES - 1) / 2) * HOP / SR


@AUDIO.register("ge2e", help="GE2E speaker LSTM, [B, 160, 40] mel power -> [B, 256]")
def build_ge2e():
    """The GE2E encoder (torch): ``[B, T, 40]`` mel power -> ``[B, 256]`` L2-normalised."""
    import torch
    from torch import nn

    class Ge2eEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
            self.linear = nn.Linear(HIDDEN, EMB_DIM)

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (h, _) = self.lstm(mels)
            e = torch.relu(self.linear(h[-1]))
            return e / torch.linalg.vector_norm(e, dim=1, keepdim=True)

    return Ge2eEncoder()


def load_ge2e_state(path: str | os.PathLike[str]) -> dict:
    """The encoder's tensors from a resemblyzer checkpoint (or a bare state dict)."""
    import torch

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    state = obj.get("model_state", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}


@FEATURE_SETS.register("speaker_ge2e")
class SpeakerGe2e(AudioFeatureSet):
    """GE2E speaker d-vectors (resemblyzer 0.1.4 weights): 256-d per 1.6 s window."""

    default_config: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000,
        "rate": 1.3,
        "min_coverage": 0.75,
        "normalize_volume": True,
    }
    config_params = {
        "sample_rate": Param(choices=(SR,)),
        # >= one window per 1.6 s (windows must tile the clip), <= one per 10 ms frame
        "rate": Param(min=SR / HOP / WINDOW_FRAMES, max=SR / HOP),
        "min_coverage": Param(above=0, max=1),
    }

    @property
    def step(self) -> int:
        return frame_step(float(self.config["rate"]))

    @property
    def rate_hz(self) -> float:
        return SR / HOP / self.step

    def row_shape(self) -> tuple[int, ...]:
        return (EMB_DIM,)

    @cached_property
    def _path(self):
        return resolve(GE2E_WEIGHTS.name)

    def weights(self) -> dict[str, str]:
        return {GE2E_WEIGHTS.name: checksum(self._path)}

    @cached_property
    def net(self):
        net = build_ge2e()
        load_into(net, load_ge2e_state(self._path), "GE2E speaker encoder", self._path)
        return net.eval().to(self.device)

    def windows(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``([n, 160, 40] float32 mel power, starts [n])`` of one clip."""
        if self.config["normalize_volume"]:
            x = normalize_volume(x)
        starts = window_starts(len(x), self.step, float(self.config["min_coverage"]))
        end = (int(starts[-1]) + WINDOW_FRAMES) * HOP
        x = np.pad(x, (0, max(0, end - len(x))))
        mel = F.mel_power_np(x, SR, N_FFT, HOP, N_FFT, N_MELS, 0.0, None, False, "slaney")
        view = np.lib.stride_tricks.sliding_window_view(mel, WINDOW_FRAMES, axis=0)
        return view[starts].transpose(0, 2, 1).astype(np.float32), starts

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        import torch

        per = [self.windows(s) for s in signals]
        if not per:
            return []
        mels = np.ascontiguousarray(np.concatenate([m for m, _ in per]))
        outs = []
        with torch.inference_mode():
            for i in range(0, len(mels), MAX_WINDOWS_PER_CALL):
                xb = torch.from_numpy(mels[i : i + MAX_WINDOWS_PER_CALL]).to(self.device)
                outs.append(self.net(xb).float().cpu().numpy())
        emb = np.concatenate(outs)
        res, at = [], 0
        for m, starts in per:
            res.append((emb[at : at + len(m)], window_times(starts)))
            at += len(m)
        return res
