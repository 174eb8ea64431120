"""Windowed audio CNN features for JCA: ``logmel_resnet18``, one 512-d row per window end frame.

JCA pairs R(2+1)D face windows with a ResNet-18 over 64-band Log-Mel windows. This set puts
the audio on the SAME window grid as ``face_r2plus1d`` (``extract.window_grid``): a window of
``window`` video frames (32) ends every ``hop`` frames (8) and at the last frame; its row is
stamped with the end frame's time. Frame times: the clip's video frames (container time
stamps, read without decoding pixels) when the clip has a video and ``video_frames`` is true,
else a ``fps`` grid (30) from the audio's start.

Per window: the ``round(window / fps / 0.01)`` Log-Mel rows (25 ms / 10 ms, 64 Slaney bands,
natural-log power: the ``logmel`` set's front-end) whose last row is the one nearest the end
frame's time (rows before the clip's start repeat its first row), normalised per window
(``normalise: window``: zero mean, unit variance; ``none``: raw log power), as a one-channel
image ``[1, rows, 64]`` (time x frequency) -> ResNet-18 (torchvision's architecture, ``conv1``
with one input channel, no classifier) -> the pooled 512-d vector.

Weights (``backbone_weights``): your audio ResNet-18 state dict (``conv1.weight`` ``[64, 1, 7,
7]``; a 3-channel ``conv1`` is summed over its input channels; ``fc.*`` is ignored), or, when
None, torchvision's ImageNet ResNet-18 file with ``conv1`` summed over RGB (the cache or
``AVEMO_WEIGHTS_TORCHVISION_RESNET18``; its canonical URL only with ``AVEMO_ALLOW_DOWNLOAD=1``).
Rows ``[512]``, nominal rate ``fps / hop`` (3.75 Hz at 30 fps, hop 8).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from avemo.data.store import ClipFeatures
from avemo.errors import FeatureConfigError
from avemo.extract.audio import frontends as F
from avemo.extract.audio.cnn_common import load_into, load_state_dict
from avemo.extract.audio.common import AudioFeatureSet, Result, ms_to_samples
from avemo.extract.base import ClipInput, Param
from avemo.extract.registry import AUDIO, FEATURE_SETS
from avemo.extract.weights import checksum, resolve
from avemo.extract.window_grid import window_ends

if TYPE_CHECKING:
    from torch import nn

HOP_MS, WIN_MS, N_FFT, N_MELS = 10.0, 25.0, 512, 64


@AUDIO.register("audio_resnet18", help="one-channel ResNet-18, [B, 1, T, 64] -> [B, 512]")
def build_audio_resnet18(
    weights: str | os.PathLike[str] | None = None, device: str = "cpu"
) -> tuple[nn.Module, Path]:
    """torchvision ResNet-18 with a one-channel ``conv1`` and no classifier: ``[B, 1, T, F] ->
    [B, 512]``; weights as the module doc says. Returns (network in eval mode, weights file)."""
    import torch
    from torch import nn
    from torchvision.models import resnet18

    net = resnet18()
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    if weights is None:
        from avemo.extract.video.backbones.torchvision_models import weight_spec

        spec, _ = weight_spec("resnet18", "IMAGENET1K_V1")
        path = resolve(spec.name)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FeatureConfigError(f"logmel_resnet18: backbone_weights {path} does not exist")
    state = load_state_dict(path, drop_prefixes=("fc.",))
    w = state.get("conv1.weight")
    if w is not None and w.dim() == 4 and w.shape[1] != 1:
        state["conv1.weight"] = w.sum(1, keepdim=True)  # RGB filters -> one channel
    load_into(net, state, "one-channel ResNet-18", path)
    return net.eval().to(torch.device(device)), path


def video_frame_times(path: str | os.PathLike[str]) -> np.ndarray | None:
    """Presentation times (s, container timeline, sorted) of a file's video frames, from the
    packets alone (no pixel decoding); None when the file has no video stream."""
    import av

    with av.open(str(path)) as c:
        if not c.streams.video:
            return None
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.pts is not None)
        if s.time_base is None:  # PyAV types it optional; a demuxed stream always has one
            raise ValueError(f"{path}: the video stream has no time base")
        return np.asarray(pts, np.float64) * float(s.time_base)


@FEATURE_SETS.register("logmel_resnet18")
class LogMelResNet18(AudioFeatureSet):
    """Log-Mel windows on the face_r2plus1d window grid -> one-channel ResNet-18, 512-d per window end (fps / hop Hz)."""

    default_config: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000,
        "window": 32,
        "hop": 8,
        "fps": 30.0,
        "video_frames": True,
        "normalise": "window",
        "backbone_weights": None,
        "batch_size": 64,
    }
    config_params: ClassVar[dict[str, Param]] = {
        "sample_rate": Param(choices=(16000,)),
        "window": Param(min=1, max=10000),
        "hop": Param(min=1, max=10000),
        "fps": Param(above=0, max=1000),
        "normalise": Param(choices=("window", "none")),
        "backbone_weights": Param(types=(str,)),
        "batch_size": Param(min=1),
    }

    @property
    def rate_hz(self) -> float:
        return float(self.config["fps"]) / int(self.config["hop"])

    def row_shape(self) -> tuple[int, ...]:
        return (512,)

    @property
    def rows_per_window(self) -> int:
        return max(
            1, int(round(int(self.config["window"]) / float(self.config["fps"]) / (HOP_MS / 1000)))
        )

    @cached_property
    def _loaded(self) -> tuple[nn.Module, Path]:
        """The network and its weights file, built once on first use."""
        return build_audio_resnet18(self.config["backbone_weights"], self.device)

    def net(self) -> nn.Module:
        return self._loaded[0]

    def weights(self) -> dict[str, str]:
        return {"logmel_resnet18": checksum(self._loaded[1])}

    def fps_grid(self, n_samples: int) -> np.ndarray:
        """Frame times of an audio-only clip: ``k / fps`` from the first sample."""
        fps = float(self.config["fps"])
        return np.arange(int(np.floor(n_samples / self.sample_rate * fps + 1e-9))) / fps

    def windows(self, signal: np.ndarray, times: np.ndarray) -> Result:
        """``([W, 512], end times)`` of one clip; ``times`` relative to the first audio sample."""
        import torch

        sr = self.sample_rate
        mel = F.log_mel_np(
            signal,
            sr,
            N_FFT,
            ms_to_samples(HOP_MS, sr),
            ms_to_samples(WIN_MS, sr),
            N_MELS,
            0.0,
            None,
            False,
            "slaney",
            1e-10,
        ).astype(np.float32)
        ends = window_ends(len(times), int(self.config["hop"]))
        if len(ends) == 0:  # shorter than one video frame: one window at the clip's end
            times, ends = np.array([len(signal) / sr]), np.zeros(1, np.int64)
        last = np.clip(np.round(times[ends] / (HOP_MS / 1000)).astype(np.int64), 0, len(mel) - 1)
        idx = np.clip(last[:, None] - np.arange(self.rows_per_window - 1, -1, -1)[None], 0, None)
        x = mel[idx]  # [W, L, 64]
        if self.config["normalise"] == "window":
            x = (x - x.mean((1, 2), keepdims=True)) / (x.std((1, 2), keepdims=True) + 1e-5)
        net, out = self.net(), []
        bs = int(self.config["batch_size"])
        with torch.inference_mode():
            dev = next(net.parameters()).device
            for i in range(0, len(x), bs):
                out.append(
                    net(torch.from_numpy(x[i : i + bs])[:, None].to(dev)).float().cpu().numpy()
                )
        return np.concatenate(out).astype(np.float32), times[ends].astype(np.float64)

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        return [self.windows(s, self.fps_grid(len(s))) for s in signals]

    def extract(self, clips: Sequence[ClipInput]) -> Iterator[ClipFeatures]:
        self.net()  # weights first: a missing file is one message before any clip is read
        for clip in clips:
            d = self._decode(clip)
            if isinstance(d, ClipFeatures):
                yield d
                continue
            try:
                times = None
                if clip.video and self.config["video_frames"]:
                    vt = video_frame_times(
                        clip.video
                    )  # container timeline -> relative to the audio
                    times = vt - d.start_s if vt is not None and len(vt) else None
                if times is None:
                    times = self.fps_grid(len(d.samples))
                res = self.windows(d.samples, times)
            except Exception as e:  # noqa: BLE001 - one bad clip must not stop the batch
                yield ClipFeatures.empty(
                    clip.clip_id, self.row_shape(), "error", f"{type(e).__name__}: {e}"
                )
                continue
            yield self._wrap(clip, d, res)
