"""Batched 5-point similarity alignment onto the ArcFace template.

The template is insightface's ``arcface_dst`` (112x112). A backbone asks for its own crop side
``size`` and ``margin`` (extra context: the crop covers ``112 * (1 + margin)`` template units
around the template centre). Transforms are estimated for all faces at once (closed-form
Umeyama, same result as ``skimage.transform.SimilarityTransform`` used by insightface's
``estimate_norm``), then each crop is one ``cv2.warpAffine``.

``CropSpec`` / ``crop_faces`` generalise this to the crop each backbone was trained on: the
template (identity networks: ArcFace, IR-50) or the detector's box (FER2013-style crops), with
margin and interpolation chosen by measurement (``avemo.bench.crops``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

# left eye, right eye, nose tip, left mouth corner, right mouth corner (x, y) in a 112x112 crop
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def template(size: int = 112, margin: float = 0.0) -> np.ndarray:
    """Landmark targets ``[5, 2]`` for a ``size`` x ``size`` crop with ``margin`` extra context."""
    if size <= 0 or margin <= -1:
        raise ValueError(f"bad crop size {size} / margin {margin}")
    return ((ARCFACE_112 - 56.0) / (1.0 + margin) + 56.0) * (size / 112.0)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms ``[N, 2, 3]`` mapping ``src [N, K, 2]`` onto ``dst [K, 2]``."""
    src = np.asarray(src, np.float64)
    if src.ndim == 2:
        src = src[None]
    dst = np.asarray(dst, np.float64)
    mu_s = src.mean(1, keepdims=True)
    mu_d = dst.mean(0)
    sc = src - mu_s
    dc = dst - mu_d
    cov = np.einsum("ki,nkj->nij", dc, sc) / src.shape[1]  # [N, 2, 2] = dst^T src / K
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    d[d == 0] = 1.0
    diag = np.stack([np.ones_like(d), d], 1)  # [N, 2]
    rot = np.einsum("nij,nj,njk->nik", u, diag, vt)
    var_s = (sc**2).sum(2).mean(1)
    scale = (s * diag).sum(1) / np.maximum(var_s, 1e-12)
    t = mu_d[None] - scale[:, None] * np.einsum("nij,nj->ni", rot, mu_s[:, 0])
    return np.concatenate([scale[:, None, None] * rot, t[:, :, None]], 2)


def align_faces(
    frames: np.ndarray | Sequence[np.ndarray],
    frame_index: Sequence[int] | np.ndarray,
    landmarks: np.ndarray,
    size: int = 112,
    margin: float = 0.0,
) -> np.ndarray:
    """Aligned uint8 RGB crops ``[N, size, size, 3]``: face ``i`` from ``frames[frame_index[i]]``."""
    landmarks = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    out = np.zeros((len(landmarks), size, size, 3), np.uint8)
    if not len(landmarks):
        return out
    mats = similarity(landmarks, template(size, margin))
    for i, (fi, m) in enumerate(zip(frame_index, mats, strict=True)):
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


def transform_points(mats: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``[N, 2, 3]`` affine maps to ``[N, K, 2]`` points."""
    return np.einsum("nij,nkj->nki", mats[:, :, :2], points) + mats[:, None, :, 2]


# ----------------------------------------------------------------------------- crop specs

METHODS = ("template", "box")
INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class CropSpec:
    """How a backbone's input crop is cut from a frame (what its training data looked like).

    ``template``: 5-point similarity onto the ArcFace template (rotation-normalised), ``margin``
    as in ``template()``. ``box``: the detector's box, no rotation; ``square`` takes a square of
    the box's longer side around its centre, otherwise the box is stretched to the crop;
    ``margin`` widens the side by that fraction. ``interpolation``: ``area`` anti-aliases
    downscaling (warp at an integer multiple of the crop size, then INTER_AREA), ``linear`` /
    ``cubic`` warp straight to the crop size.
    """

    method: str = "template"
    margin: float = 0.0
    square: bool = True
    interpolation: str = "linear"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"crop method must be one of {METHODS}, got {self.method!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"crop interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if not -0.9 < float(self.margin) < 4:
            raise ValueError(f"crop margin must be in (-0.9, 4), got {self.margin!r}")

    @classmethod
    def from_config(cls, value: Mapping[str, Any] | CropSpec) -> CropSpec:
        """A spec from a config mapping (``{method: box, margin: 0.1, ...}``); unknown keys refused."""
        if isinstance(value, CropSpec):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(
                f"crop must be a mapping with keys {sorted(asdict(cls()))}, got {value!r}"
            )
        unknown = sorted(set(value) - set(asdict(cls())))
        if unknown:
            raise ValueError(f"unknown crop keys {unknown}; known: {sorted(asdict(cls()))}")
        fields: dict[str, Any] = {k: (float(v) if k == "margin" else v) for k, v in value.items()}
        return cls(**fields)

    def as_config(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        shape = "" if self.method == "template" else (" square" if self.square else " stretched")
        return f"{self.method}{shape} margin {self.margin:g} {self.interpolation}"


def _box_mats(boxes: np.ndarray, size: int, spec: CropSpec) -> np.ndarray:
    """Affine maps ``[N, 2, 3]`` taking each (widened) box onto the ``size`` crop."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    c = (b[:, :2] + b[:, 2:]) / 2
    wh = np.maximum(b[:, 2:] - b[:, :2], 1.0) * (1.0 + spec.margin)
    if spec.square:
        wh = np.repeat(wh.max(1, keepdims=True), 2, 1)
    s = size / wh  # [N, 2] x and y scale
    mats = np.zeros((len(b), 2, 3))
    mats[:, 0, 0], mats[:, 1, 1] = s[:, 0], s[:, 1]
    mats[:, :, 2] = size / 2.0 - s * c
    return mats


def crop_mats(boxes: np.ndarray, landmarks: np.ndarray, size: int, spec: CropSpec) -> np.ndarray:
    """Frame -> crop affine maps ``[N, 2, 3]`` of ``spec`` (montages reuse them)."""
    if spec.method == "box":
        return _box_mats(boxes, size, spec)
    lmk = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    return similarity(lmk, template(size, spec.margin)) if len(lmk) else np.zeros((0, 2, 3))


def crop_faces(
    frames: np.ndarray | Sequence[np.ndarray],
    frame_index: Sequence[int] | np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    size: int,
    spec: CropSpec,
) -> np.ndarray:
    """uint8 RGB crops ``[N, size, size, 3]`` cut as ``spec`` says; face ``i`` from ``frames[frame_index[i]]``."""
    n = (
        len(np.asarray(landmarks).reshape(-1, 5, 2))
        if spec.method == "template"
        else len(np.asarray(boxes).reshape(-1, 4))
    )
    out = np.zeros((n, size, size, 3), np.uint8)
    if not n:
        return out
    mats = crop_mats(boxes, landmarks, size, spec)
    flag = INTERPOLATIONS[spec.interpolation]
    for i, (fi, m) in enumerate(zip(frame_index, mats, strict=True)):
        img = frames[int(fi)]
        # downscale factor of this face: warp at k x size then area-average, k an integer
        k = (
            int(1.0 / max(np.sqrt(abs(np.linalg.det(m[:, :2]))), 1e-6))
            if spec.interpolation == "area"
            else 1
        )
        if k >= 2:
            big = cv2.warpAffine(
                img,
                np.vstack([m[0] * k, m[1] * k]),
                (size * k, size * k),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
            cv2.resize(big, (size, size), dst=out[i], interpolation=cv2.INTER_AREA)
        else:
            warp = cv2.INTER_LINEAR if flag == cv2.INTER_AREA else flag
            cv2.warpAffine(
                img,
                m,
                (size, size),
                dst=out[i],
                flags=warp,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
    return out
