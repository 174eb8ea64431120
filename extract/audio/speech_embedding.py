"""Google's speech_embedding audio CNN (the two ONNX files of the openwakeword 0.4.0 wheel).

Chain (as the model was exported, learnt from reading openwakeword 0.4.0 and the graphs):

1. ``melspectrogram.onnx``: float waveform in int16 units ``[1, n]`` -> ``[1, 1, F, 32]`` log-mel
   power in dB, frames of 512 samples (a 400-sample window at offset 56) every 160 samples:
   ``F = (n - 512) // 160 + 1``, frame ``i`` centred on sample ``160 i + 256``. The graph floors
   every value at (max over the *whole input tensor*) - 80 dB, so clips are run one at a time:
   batching clips would let a loud clip raise a quiet clip's floor.
2. The scaling ``x / 10 + 2`` (what openwakeword applies to match the TF-Hub model's input).
3. ``embedding_model.onnx``: windows of 76 mel frames ``[N, 76, 32, 1]`` -> ``[N, 1, 1, 96]``,
   one window every ``step_frames`` frames (8 = 80 ms). Windows of all clips in a batch go
   through one call (this model is per window, so batching does not change numbers).

Rows: one 96-d vector per window; ``timestamps[j]`` is the window centre,
``(1280 j + 6256) / 16000 = 0.08 j + 0.391 s`` for the default step. A clip needs 12,512 samples
(0.782 s) for one window: shorter clips are zero-padded to one window when ``pad_short`` (one
row, status ok), else they give zero rows (status ok, message says so). Input differs from
openwakeword's in one way: samples are scaled to int16 units but not rounded to integers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avemo.errors import FeatureConfigError
from avemo.extract.audio.common import AudioFeatureSet, Result
from avemo.extract.base import Param
from avemo.extract.registry import AUDIO, FEATURE_SETS
from avemo.extract.weights import WeightSpec, checksum, register_weight, resolve

_MEMBER = "openwakeword/resources/models/"
MEL_WEIGHTS = register_weight(
    WeightSpec(
        "speech_embedding_mel",
        "melspectrogram.onnx",
        "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
        package="openwakeword",
        version="0.4.0",
        member=_MEMBER + "melspectrogram.onnx",
        licence="Apache-2.0",
        note="log-mel front-end of Google's speech_embedding (openwakeword export)",
    )
)
EMB_WEIGHTS = register_weight(
    WeightSpec(
        "speech_embedding",
        "embedding_model.onnx",
        "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
        package="openwakeword",
        version="0.4.0",
        member=_MEMBER + "embedding_model.onnx",
        licence="Apache-2.0",
        note="Google speech_embedding (tfhub.dev/google/speech_embedding/1)",
    )
)

MEL_HOP = 160
MEL_FRAME = 512
MEL_CENTRE = 256
WINDOW_FRAMES = 76  # fixed by the embedding model's input shape
EMB_DIM = 96


def _session(path: str, device: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(path, sess_options=opts, providers=providers)


@AUDIO.register("speech_embedding", help="Google speech_embedding ONNX pair (openwakeword 0.4.0)")
class SpeechEmbeddingModel:
    """The two ONNX sessions; ``mel(x)`` per clip, ``embed(windows)`` batched."""

    def __init__(
        self,
        mel_path: str | os.PathLike[str],
        emb_path: str | os.PathLike[str],
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        threads = threads or min(4, os.cpu_count() or 1)
        self.mel_session = _session(str(mel_path), device, threads)
        self.emb_session = _session(str(emb_path), device, threads)

    def mel(self, x: np.ndarray, input_scale: float, scale: float, offset: float) -> np.ndarray:
        """``[F, 32]`` scaled log-mel of one clip (needs >= 512 samples)."""
        inp = (np.asarray(x, np.float32) * input_scale)[None]
        out = self.mel_session.run(None, {self.mel_session.get_inputs()[0].name: inp})[0]
        return (out[0, 0] * scale + offset).astype(np.float32)

    def embed(self, windows: np.ndarray, batch: int = 256) -> np.ndarray:
        """``[N, 76, 32]`` -> ``[N, 96]``."""
        name = self.emb_session.get_inputs()[0].name
        out = [
            self.emb_session.run(None, {name: windows[i : i + batch, :, :, None]})[0]
            for i in range(0, len(windows), batch)
        ]
        return (
            np.concatenate(out).reshape(len(windows), EMB_DIM)
            if out
            else np.zeros((0, EMB_DIM), np.float32)
        )


@FEATURE_SETS.register("speech_embedding")
class SpeechEmbedding(AudioFeatureSet):
    """Google speech_embedding: 32-band log-mel -> 96-d every 80 ms (ONNX, onnxruntime)."""

    default_config: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000,
        "input_scale": 32767.0,
        "mel_scale": 0.1,
        "mel_offset": 2.0,
        "step_frames": 8,
        "pad_short": True,
    }
    config_params = {
        "input_scale": Param(above=0),
        "mel_scale": Param(above=0),
        "step_frames": Param(min=1),
    }

    def validate(self) -> None:
        super().validate()
        if self.sample_rate != 16000:
            raise FeatureConfigError("speech_embedding: the model is fixed to 16 kHz input")
        if int(self.config["step_frames"]) < 1:
            raise FeatureConfigError("speech_embedding: step_frames must be >= 1")

    @property
    def step(self) -> int:
        return int(self.config["step_frames"])

    @property
    def rate_hz(self) -> float:
        return self.sample_rate / (MEL_HOP * self.step)

    def row_shape(self) -> tuple[int, ...]:
        return (EMB_DIM,)

    @cached_property
    def _paths(self) -> tuple[Path, Path]:
        return resolve(MEL_WEIGHTS.name), resolve(EMB_WEIGHTS.name)

    def weights(self) -> dict[str, str]:
        return {
            MEL_WEIGHTS.name: checksum(self._paths[0]),
            EMB_WEIGHTS.name: checksum(self._paths[1]),
        }

    @cached_property
    def model(self) -> SpeechEmbeddingModel:
        return SpeechEmbeddingModel(*self._paths, device=self.device)

    @staticmethod
    def min_samples() -> int:
        return MEL_FRAME + (WINDOW_FRAMES - 1) * MEL_HOP

    def window_times(self, count: int) -> np.ndarray:
        centre = MEL_CENTRE + (WINDOW_FRAMES - 1) / 2 * MEL_HOP
        return (np.arange(count) * self.step * MEL_HOP + centre) / self.sample_rate

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        c = self.config
        windows, counts = [], []
        for s in signals:
            if len(s) < self.min_samples():
                if not c["pad_short"]:
                    counts.append(0)
                    continue
                s = np.pad(s, (0, self.min_samples() - len(s)))
            mel = self.model.mel(
                s, float(c["input_scale"]), float(c["mel_scale"]), float(c["mel_offset"])
            )
            n = (len(mel) - WINDOW_FRAMES) // self.step + 1
            view = np.lib.stride_tricks.sliding_window_view(mel, WINDOW_FRAMES, axis=0)
            windows.append(view[:: self.step][:n].transpose(0, 2, 1))  # [n, 76, 32]
            counts.append(n)
        emb = (
            self.model.embed(np.ascontiguousarray(np.concatenate(windows)))
            if windows
            else np.zeros((0, EMB_DIM), np.float32)
        )
        out, at = [], 0
        for n in counts:
            out.append(
                (
                    emb[at : at + n].astype(np.float32)
                    if n
                    else np.zeros((0, EMB_DIM), np.float32),
                    self.window_times(n),
                )
            )
            at += n
        return out
