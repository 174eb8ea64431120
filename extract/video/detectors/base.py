"""What every face detector returns, and the helpers they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avemo.data.registry import RegisteredName
from avemo.extract.registry import DETECTORS


@dataclass
class Faces:
    """Detections in one frame: ``boxes [K, 4]`` (x1, y1, x2, y2), ``scores [K]``,
    ``landmarks [K, 5, 2]`` (eyes, nose, mouth corners; x, y in frame pixels)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def none(cls) -> Faces:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        )

    def __len__(self) -> int:
        return len(self.scores)

    def scaled(self, factor: float) -> Faces:
        """Coordinates multiplied by ``factor`` (detection on a resized frame)."""
        return Faces(self.boxes * factor, self.scores, self.landmarks * factor)

    def filter(self, keep: np.ndarray) -> Faces:
        return Faces(self.boxes[keep], self.scores[keep], self.landmarks[keep])


class Detector:
    """Base class: ``detect(frames)`` takes uint8 RGB frames ``[N, H, W, 3]`` (or a list of
    frames of any sizes) and returns one ``Faces`` per frame. Thresholds are explicit config."""

    name = RegisteredName(DETECTORS)  # the key in @DETECTORS.register("...")
    #: how many thresholds the detector reads (None: one value, or a list whose last item counts)
    n_thresholds: int | None = None

    @classmethod
    def check_thresholds(cls, thresholds: Sequence[float] | float) -> None:
        """ValueError unless ``thresholds`` fit this detector. Cheap (no model is loaded), so a
        feature set checks its config before any clip is read."""
        th = list(thresholds) if isinstance(thresholds, Sequence) else [thresholds]
        if cls.n_thresholds is not None and len(th) != cls.n_thresholds:
            raise ValueError(f"{cls.name} needs {cls.n_thresholds} thresholds, got {th!r}")
        if not th:
            raise ValueError(f"{cls.name} needs at least one threshold, got []")

    def detect(
        self,
        frames: np.ndarray | list[np.ndarray],
        sizes: Sequence[tuple[float, float] | None] | None = None,
    ) -> list[Faces]:
        """``sizes``: optional per-frame (min, max) face side hint from tracking; detectors
        that can use it search only those scales, others ignore it."""
        raise NotImplementedError

    def detect_clip(
        self,
        frames: list[np.ndarray],
        sizes: Sequence[tuple[float, float] | None] | None = None,
        first: int = 0,
        face_before: bool = False,
    ) -> list[Faces]:
        """``frames``: consecutive key frames of one clip (the pipeline's fixed blocks), ``first``
        the clip's count of key frames before them, ``face_before`` whether the key frame just
        before them held a face. Detectors that use this temporal context override it (they
        must stay a function of these arguments alone); the default is ``detect``."""
        return self.detect(frames, sizes=sizes)

    def weights_info(self) -> dict[str, str]:
        return {}

    def config(self) -> dict[str, Any]:
        """Every parameter that changes detections (recorded in provenance)."""
        return {}


def group_by_shape(frames: np.ndarray | list[np.ndarray]) -> list[tuple[list[int], np.ndarray]]:
    """Frames of equal size stacked together (one batched forward per size)."""
    if isinstance(frames, np.ndarray):
        return [(list(range(len(frames))), frames)] if len(frames) else []
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault(f.shape, []).append(i)
    return [(idx, np.stack([frames[i] for i in idx])) for idx in groups.values()]
