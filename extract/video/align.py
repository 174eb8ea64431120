"""Batched 5-point similarity alignment onto the ArcFace template.

The template is insightface's ``arcface_dst`` (112x112). A backbone asks for its own crop side
``size`` and ``margin`` (extra context: the crop covers ``112 * (1 + margin)`` template units
around the template centre). Transforms are estimated for all faces at once (closed-form
Umeyama, same result as ``skimage.transform.SimilarityTransform`` used by insightface's
``estimate_norm``), then each crop is one ``cv2.warpAffine``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# left eye, right eye, nose tip, left mouth corner, right mouth corner (x, y) in a 112x112 crop
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
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
        cv2.warpAffine(frames[int(fi)], m, (size, size), dst=out[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def transform_points(mats: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``[N, 2, 3]`` affine maps to ``[N, K, 2]`` points."""
    return np.einsum("nij,nkj->nki", mats[:, :, :2], points) + mats[:, None, :, 2]
