"""Windowed face feature sets: one vector per (clip, window end frame) from a clip-level video CNN.

``face_r2plus1d`` (JCA's visual input): the face pipeline (detector, subject track, alignment)
gives one aligned crop per frame; every ``hop`` frames a window of the last ``window`` frames
ends, ``frames`` crops are sampled from it evenly (stride ``window // frames``, the end frame
included; before the clip's start the first frame repeats) and R(2+1)D-18 turns them into one
512-d row. Row time stamps are the window END frames' times, so stage two's timeline alignment
(``data.timeline``, nearest row within 1.5 hops) maps them onto per-frame labels without glue.

Mask: a window is valid when the subject's face is in at least ``min_present`` of its sampled
frames; sampled frames without it take the crop of the nearest sampled frame that has it.
Invalid windows are zero rows with mask 0 (the CNN is not run on them).

Config keys (besides the face pipeline's, see ``feature_sets``)
  clip_backbone     CLIP_BACKBONES name (``r2plus1d_18``); backbone_weights: a state dict file
                    (None: torchvision's Kinetics-400 file, see ``backbones.r2plus1d``)
  window, frames    frames per window and crops sampled from it (32, 8)
  hop               frames between window ends (8: four rows per 32 frames)
  min_present       share of sampled frames with the subject for a valid window (0.5)
  crop_size, align_margin  the aligned crops (112 px, ArcFace template: as Aff-Wild2's
                    112x112 cropped-aligned frames the JCA reference trained on)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from avemo.data.store import ClipFeatures
from avemo.errors import FeatureConfigError
from avemo.extract.base import ClipInput
from avemo.extract.registry import CLIP_BACKBONES, FEATURE_SETS
from avemo.extract.video.backbones import r2plus1d as _r2plus1d  # noqa: F401 - registers
from avemo.extract.video.feature_sets import FaceCrops
from avemo.extract.window_grid import window_ends

__all__ = ["FaceR2Plus1D", "fill_absent", "sample_frames", "window_ends"]


def sample_frames(ends: np.ndarray, window: int, frames: int) -> np.ndarray:
    """``[W, frames]`` frame indices: evenly over the ``window`` frames ending at each end
    (stride ``window // frames``, end included), clamped at the clip's first frame."""
    stride = max(1, window // frames)
    offs = stride * np.arange(frames - 1, -1, -1, dtype=np.int64)  # ..., 2s, s, 0 before the end
    return np.clip(ends[:, None] - offs[None, :], 0, None)


def fill_absent(idx: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Each sampled index without the subject replaced by the nearest sampled one with it."""
    out = idx.copy()
    for w in range(len(idx)):
        ok = np.flatnonzero(present[w])
        if len(ok) and len(ok) < idx.shape[1]:
            for k in np.flatnonzero(~present[w]):
                out[w, k] = idx[w, ok[np.argmin(np.abs(ok - k))]]
    return out


@FEATURE_SETS.register("face_r2plus1d")
class FaceR2Plus1D(FaceCrops):
    """Face windows -> R(2+1)D-18 (Kinetics or your fine-tuned weights), 512-d per window end.

    The per-frame part is ``face_crops`` (same detector, subject track and crop); the crops of a
    clip stay in memory until its windows are embedded (112 px: 37 kB per frame)."""

    default_config: ClassVar[dict[str, Any]] = {
        **FaceCrops.default_config,
        "clip_backbone": "r2plus1d_18",
        "backbone_weights": None,
        "window": 32,
        "frames": 8,
        "hop": 8,
        "min_present": 0.5,
        "clip_batch": 8,
    }

    def __init__(self, config: Any = None, device: str = "cpu") -> None:
        super().__init__(config, device)
        c = self.config
        for key in ("window", "frames", "hop", "crop_size", "clip_batch"):
            if int(c[key]) < 1:
                raise FeatureConfigError(
                    f"feature set {self.name!r}: {key} must be >= 1, got {c[key]}"
                )
        if int(c["frames"]) > int(c["window"]):
            raise FeatureConfigError(
                f"feature set {self.name!r}: frames ({c['frames']}) must be <= window "
                f"({c['window']}): the crops are sampled from the window"
            )
        self._clip_net: Any = None

    @property
    def rate_hz(self) -> float | None:
        fps = self.config.get("fps")
        return float(fps) / int(self.config["hop"]) if fps else None

    def clip_backbone(self) -> Any:
        if self._clip_net is None:
            c = self.config
            self._clip_net = CLIP_BACKBONES.build(
                c["clip_backbone"],
                weights=c.get("backbone_weights"),
                device=self.device,
                batch_size=c["clip_batch"],
            )
        return self._clip_net

    def _embedder_weights(self) -> dict[str, str]:
        return dict(self.clip_backbone().weights_info())

    def extract(self, clips: Sequence[ClipInput]) -> Iterator[ClipFeatures]:
        net = self.clip_backbone()  # built before the pipeline starts its decoders
        for res in self.pipeline().run(clips):
            yield self.windows(res, net)

    def windows(self, res: ClipFeatures, net: Any) -> ClipFeatures:
        """One clip's per-frame crops -> its window rows (see the module doc)."""
        c = self.config
        dim = int(net.out_dim)
        if res.status == "error":
            return ClipFeatures.empty(res.clip_id, (dim,), "error", res.message, np.float32)
        ends = window_ends(len(res.mask), int(c["hop"]))
        idx = sample_frames(ends, int(c["window"]), int(c["frames"]))
        present = res.mask[idx]
        valid = present.mean(1) >= float(c["min_present"])
        values = np.zeros((len(ends), dim), np.float32)
        if valid.any():
            sel = fill_absent(idx[valid], present[valid])
            values[valid] = net.embed(res.values[sel])  # [V, frames, S, S, 3] crops
        status, notes = res.status, [res.message] if res.message else []
        if status == "ok" and not valid.any():
            status = "no_face"
            notes.insert(0, f"no window with the face in >= {c['min_present']} of its frames")
        elif (~valid).any():
            notes.insert(
                0, f"{int((~valid).sum())} of {len(ends)} windows without the face (mask 0)"
            )
        return ClipFeatures(
            res.clip_id,
            values,
            res.timestamps[ends].astype(np.float64),
            valid,
            status,
            "; ".join(notes),
            info=res.info,
        )
