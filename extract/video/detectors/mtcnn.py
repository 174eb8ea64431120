"""MTCNN (Zhang et al. 2016) with the P/R/O-Net weights shipped in the facenet-pytorch 2.6.0 wheel.

Written for batches: P-Net runs once per pyramid scale on all frames of a batch, R-Net and O-Net
run once on all candidate boxes of all frames (crops via ``roi_align``, which averages like an
area resize), NMS is ``torchvision.ops.batched_nms`` keyed by frame. The networks match the
state-dict layout of the wheel's ``pnet.pt``/``rnet.pt``/``onet.pt`` so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms, roi_align

from avemo.extract.registry import DETECTORS
from avemo.extract.video.detectors.base import Detector, Faces, group_by_shape
from avemo.extract.weights import WeightSpec, checksum, register_weight, resolve

_FACENET = ("facenet-pytorch", "2.6.0", "facenet_pytorch/data/")
_SHA = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
for _net, _sha in _SHA.items():
    register_weight(
        WeightSpec(
            name=f"mtcnn_{_net}",
            filename=f"mtcnn_{_net}.pt",
            sha256=_sha,
            package=_FACENET[0],
            version=_FACENET[1],
            member=f"{_FACENET[2]}{_net}.pt",
            licence="MIT (facenet-pytorch)",
            note="State dict from the facenet-pytorch wheel, fetched without its dependencies.",
        )
    )


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        logits = self.conv4_1(x)
        return self.conv4_2(x), torch.sigmoid(logits[:, 1] - logits[:, 0])  # softmax of 2 classes


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # the ported weights flatten in (W, H, C) order
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))
        logits = self.dense5_1(x)
        return self.dense5_2(x), torch.sigmoid(logits[:, 1] - logits[:, 0])


class ONet(nn.Module):
    """Output net on 48x48 crops: score, box regression, 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        logits = self.dense6_1(x)
        return self.dense6_2(x), self.dense6_3(x), torch.sigmoid(logits[:, 1] - logits[:, 0])


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow boxes to squares around their centre (what R/O-Net were trained on)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + (w - side) / 2
    y1 = boxes[:, 1] + (h - side) / 2
    return torch.stack([x1, y1, x1 + side, y1 + side], 1)


def _regress(boxes: torch.Tensor, reg: torch.Tensor, plus_one: bool) -> torch.Tensor:
    w = boxes[:, 2] - boxes[:, 0] + (1 if plus_one else 0)
    h = boxes[:, 3] - boxes[:, 1] + (1 if plus_one else 0)
    return boxes[:, :4] + reg * torch.stack([w, h, w, h], 1)


class _FrameBatch:
    """Frames of one size as the stages need them: pyramid levels and box crops, both returned
    normalised, NCHW in channels_last memory on the device.

    ``opencv``: area resizes on uint8 frames, one call per frame/box (fast on CPU, no float copy
    of the full frames). ``torch``: ``interpolate(mode="area")`` and ``roi_align`` (GPU).
    Each pyramid level is resized from the previous one, not from the full frame.
    """

    def __init__(self, frames: np.ndarray, device: torch.device, backend: str) -> None:
        if backend not in ("opencv", "torch"):
            raise ValueError(f"mtcnn backend must be 'opencv' or 'torch', got {backend!r}")
        self.frames, self.device, self.backend = frames, device, backend
        self.shape = frames.shape[1:3]
        self._level: Any = frames
        self._full: torch.Tensor | None = None

    def _tensor(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arr)).to(self.device).permute(0, 3, 1, 2)

    def full(self) -> torch.Tensor:
        if self._full is None:
            self._full = self._tensor(self.frames).float().contiguous()
        return self._full

    def level(self, size: tuple[int, int]) -> torch.Tensor:
        if self.backend == "opencv":
            self._level = np.stack(
                [
                    cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                    for f in self._level
                ]
            )
            x = self._tensor(self._level).float()
        else:
            prev = self.full() if isinstance(self._level, np.ndarray) else self._level
            self._level = x = torch.nn.functional.interpolate(prev, size=size, mode="area")
        return _normalise(x).contiguous(memory_format=torch.channels_last)

    def crops(self, boxes: torch.Tensor, ids: torch.Tensor, size: int) -> torch.Tensor:
        # MTCNN boxes are 1-based inclusive pixel ranges: pixels x1-1 .. x2-1, i.e. [x1-1, x2)
        if self.backend == "torch":
            shift = torch.tensor([1.0, 1.0, 0.0, 0.0], device=boxes.device)
            rois = torch.cat([ids[:, None].to(boxes.dtype), boxes[:, :4] - shift], 1).float()
            x = roi_align(
                self.full(),
                rois,
                output_size=size,
                spatial_scale=1.0,
                sampling_ratio=2,
                aligned=True,
            )
        else:
            x = self._tensor(
                _crop_resize(
                    self.frames, boxes[:, :4].float().cpu().numpy(), ids.cpu().numpy(), size
                )
            ).float()
        return _normalise(x).contiguous(memory_format=torch.channels_last)


def _crop_resize(frames: np.ndarray, boxes: np.ndarray, ids: np.ndarray, size: int) -> np.ndarray:
    """``[K, size, size, 3]`` uint8: each box cut out (zero outside the frame), area-resized.

    Boxes are cut from the octave (1, 1/2, 1/4 ...) where they are 1-2x the target size, so each
    area resize reads a small patch instead of the full-resolution box (4-10x faster).
    """
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    octaves: dict[tuple[int, int], np.ndarray] = {}

    def octave(i: int, k: int) -> np.ndarray:
        if (i, k) not in octaves:
            prev = frames[i] if k == 0 else octave(i, k - 1)
            octaves[(i, k)] = (
                prev
                if k == 0
                else cv2.resize(
                    prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA
                )
            )
        return octaves[(i, k)]

    for n, ((x1, y1, x2, y2), i) in enumerate(zip(boxes, ids, strict=True)):
        side = max(x2 - x1, y2 - y1, 1.0)
        k = max(0, int(np.floor(np.log2(side / size)))) if side > 2 * size else 0
        img = octave(int(i), k)
        f = 0.5**k
        h, w = img.shape[:2]
        a, b = int(np.floor((x1 - 1) * f)), int(np.floor(x2 * f))
        c, d = int(np.floor((y1 - 1) * f)), int(np.floor(y2 * f))
        ca, cb, cc, cd = max(a, 0), min(b, w), max(c, 0), min(d, h)
        if b <= a or d <= c or cb <= ca or cd <= cc:
            continue
        if (ca, cb, cc, cd) == (a, b, c, d):
            patch = img[c:d, a:b]
        else:
            patch = np.zeros((d - c, b - a, 3), np.uint8)
            patch[cc - c : cd - c, ca - a : cb - a] = img[cc:cd, ca:cb]
        cv2.resize(patch, (size, size), dst=out[n], interpolation=cv2.INTER_AREA)
    return out


@DETECTORS.register("mtcnn")
class MTCNN(Detector):
    """MTCNN face detector + 5 landmarks (facenet-pytorch weights, MIT), batched across frames."""

    # P, R, O-Net; O-Net at 0.8 (as insightface's MTCNN) drops borderline cartoon faces (0.75 seen)
    default_thresholds = [0.6, 0.7, 0.8]
    n_thresholds = 3  # P, R, O-Net

    def __init__(
        self,
        thresholds: Sequence[float] = (0.6, 0.7, 0.8),
        min_face_size: float = 40,
        factor: float = 0.709,
        nms: Sequence[float] = (0.5, 0.7, 0.7, 0.7),
        weights: dict[str, str] | None = None,
        device: str = "cpu",
    ) -> None:
        if len(thresholds) != 3:
            raise ValueError(f"mtcnn needs 3 thresholds (P, R, O-Net), got {list(thresholds)}")
        self.thresholds = [float(t) for t in thresholds]
        self.min_face_size = float(min_face_size)
        self.factor = float(factor)
        self.nms = [float(t) for t in nms]
        self.device = torch.device(device)
        # pyramid + crops: OpenCV on uint8 (fast on CPU) or torch interpolate/roi_align (GPU)
        self.backend = "torch" if self.device.type == "cuda" else "opencv"
        self._paths = {
            n: resolve(f"mtcnn_{n}", (weights or {}).get(n)) for n in ("pnet", "rnet", "onet")
        }
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for n, net in (("pnet", self.pnet), ("rnet", self.rnet), ("onet", self.onet)):
            net.load_state_dict(torch.load(self._paths[n], map_location="cpu", weights_only=True))
            # channels_last on CPU too: its max-pool kernel is ~6x faster than NCHW's
            net.eval().to(self.device).to(memory_format=torch.channels_last)

    def weights_info(self) -> dict[str, str]:
        return {f"mtcnn_{n}": checksum(p) for n, p in self._paths.items()}

    def config(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds,
            "min_face_size": self.min_face_size,
            "factor": self.factor,
            "nms": self.nms,
        }

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _one_thread(self) -> Iterator[None]:
        """R/O-Net on one CPU thread: their dense layers (BLAS GEMM) sum in an order that depends
        on the thread count (O-Net's moved boxes by ~3e-5 px between 1 and 2 threads, features by
        ~3e-4), so a run under torchrun (1 thread a rank) and one with every core would differ.
        They see small crops, so one thread costs little."""
        n = torch.get_num_threads()
        if self.device.type != "cpu" or n == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)

    @torch.inference_mode()
    def detect(
        self,
        frames: np.ndarray | list[np.ndarray],
        sizes: Sequence[tuple[float, float] | None] | None = None,
    ) -> list[Faces]:
        """Faces per frame. ``sizes[i] = (lo, hi)`` limits frame i's pyramid to faces of about
        that side (a tracked face's size): P-Net then skips the big, expensive levels."""
        n = len(frames)
        out: list[Faces] = [Faces.none() for _ in range(n)]
        for idx, stack in group_by_shape(frames):
            rng = np.array(
                [(0.0, np.inf) if sizes is None or sizes[i] is None else sizes[i] for i in idx],
                np.float64,
            ).reshape(-1, 2)
            for i, faces in zip(idx, self._detect_same_size(stack, rng), strict=True):
                out[i] = faces
        return out

    def _detect_same_size(self, frames: np.ndarray, sizes: np.ndarray) -> list[Faces]:
        n = len(frames)
        src = _FrameBatch(frames, self.device, self.backend)
        with self._autocast():
            boxes, img_ids = self._stage_p(src, sizes)
            with self._one_thread():
                if len(boxes):
                    boxes, img_ids = self._stage_r(src, boxes, img_ids)
                if len(boxes):
                    boxes, img_ids, points = self._stage_o(src, boxes, img_ids)
        res = [Faces.none() for _ in range(n)]
        if not len(boxes):
            return res
        box, ids, pts = (
            boxes.float().cpu().numpy(),
            img_ids.cpu().numpy(),
            points.float().cpu().numpy(),
        )
        for i in np.unique(ids):
            sel = ids == i
            order = np.argsort(-box[sel, 4])
            res[int(i)] = Faces(
                box[sel, :4][order].astype(np.float32),
                box[sel, 4][order].astype(np.float32),
                pts[sel][order].astype(np.float32),
            )
        return res

    def _scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / max(self.min_face_size, 12.0)
        side = min(h, w) * m
        scales = []
        s = m
        while side >= 12:
            scales.append(s)
            s *= self.factor
            side *= self.factor
        return scales

    def _stage_p(self, src: _FrameBatch, sizes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = src.shape
        dev = self.device
        all_boxes, all_ids = [], []
        for s in self._scales(h, w):
            level = src.level((int(h * s + 1), int(w * s + 1)))
            face = 12.0 / s  # face side this level's 12-px window sees, with one level of slack:
            use = np.nonzero(
                (face >= sizes[:, 0] * self.factor) & (face * self.factor <= sizes[:, 1])
            )[0]
            if not len(use):
                continue
            sub = len(use) < len(sizes)
            reg, prob = self.pnet(level[torch.from_numpy(use).to(dev)] if sub else level)
            cand = (prob >= self.thresholds[0]).nonzero()
            if not len(cand):
                continue
            ids, yy, xx = cand[:, 0], cand[:, 1], cand[:, 2]
            score = prob[ids, yy, xx].float()
            r = reg[ids, :, yy, xx].float()
            cell = torch.stack([xx, yy], 1).float()
            q1 = torch.floor((2 * cell + 1) / s)
            q2 = torch.floor((2 * cell + 12) / s)
            b = torch.cat([q1, q2], 1)
            keep = batched_nms(b, score, ids, self.nms[0])
            all_boxes.append(torch.cat([b[keep], score[keep, None], r[keep]], 1))
            all_ids.append(torch.from_numpy(use).to(dev)[ids[keep]] if sub else ids[keep])
        if not all_boxes:
            return torch.zeros(0, 5, device=dev), torch.zeros(0, dtype=torch.long, device=dev)
        boxes, ids = torch.cat(all_boxes), torch.cat(all_ids)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], ids, self.nms[1])
        boxes, ids = boxes[keep], ids[keep]
        reg_boxes = _square(_regress(boxes[:, :4], boxes[:, 5:9], plus_one=False))
        return torch.cat([reg_boxes, boxes[:, 4:5]], 1), ids

    def _stage_r(
        self, src: _FrameBatch, boxes: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        reg, score = self.rnet(src.crops(boxes, ids, 24))
        ok = score.float() > self.thresholds[1]
        boxes, ids, reg, score = boxes[ok], ids[ok], reg[ok].float(), score[ok].float()
        keep = batched_nms(boxes[:, :4], score, ids, self.nms[2])
        boxes, ids, reg, score = boxes[keep], ids[keep], reg[keep], score[keep]
        return torch.cat([_square(_regress(boxes, reg, plus_one=True)), score[:, None]], 1), ids

    def _stage_o(
        self, src: _FrameBatch, boxes: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reg, pts, score = self.onet(src.crops(boxes, ids, 48))
        ok = score.float() > self.thresholds[2]
        boxes, ids, reg, pts, score = (
            boxes[ok],
            ids[ok],
            reg[ok].float(),
            pts[ok].float(),
            score[ok].float(),
        )
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        px = w * pts[:, :5] + boxes[:, 0:1] - 1
        py = h * pts[:, 5:] + boxes[:, 1:2] - 1
        points = torch.stack([px, py], 2)
        boxes = _regress(boxes, reg, plus_one=True)
        keep = _nms_min(boxes, score, ids, self.nms[3])
        return torch.cat([boxes[keep], score[keep, None]], 1), ids[keep], points[keep]


def _nms_min(
    boxes: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor, thr: float
) -> torch.Tensor:
    """NMS with intersection over the smaller box (drops a box nested inside a bigger face)."""
    if not len(boxes):
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True)
    b, i_ = boxes[order], ids[order]
    area = (b[:, 2] - b[:, 0] + 1).clamp(min=0) * (b[:, 3] - b[:, 1] + 1).clamp(min=0)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    ratio = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-6)
    same = i_[:, None] == i_[None, :]
    suppress = (ratio > thr) & same
    keep = torch.ones(len(b), dtype=torch.bool, device=b.device)
    sup = suppress.cpu().numpy()
    kp = keep.cpu().numpy()
    for k in range(len(b)):
        if kp[k]:
            later = sup[k].copy()
            later[: k + 1] = False
            kp[later] = False
    return order[torch.from_numpy(kp).to(b.device)]
