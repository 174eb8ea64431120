"""Face tracks within one clip: link detections over time, fill the frames between detections,
and pick the main face.

Detections arrive on key frames (every ``detect_every``-th frame). A detection joins the track
whose last box overlaps it most (IoU), or failing that whose centre is close relative to the face
size (fast motion between sparse key frames); otherwise it starts a new track. Frames between two
key frames get linearly interpolated boxes and landmarks when the track is seen at both ends, the
nearer key frame's face when seen at one end only. The main track maximises
``sum(score * sqrt(area))`` over its key frames: long (temporally consistent), large, confident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avemo.extract.video.detectors.base import Faces


@dataclass
class Track:
    id: int
    frames: list[int] = field(default_factory=list)  # key frames where the face was detected
    boxes: list[np.ndarray] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    weight: float = 0.0  # sum(score * sqrt(area))

    def add(self, frame: int, box: np.ndarray, lmk: np.ndarray, score: float) -> None:
        self.frames.append(frame)
        self.boxes.append(np.asarray(box, np.float32))
        self.landmarks.append(np.asarray(lmk, np.float32))
        self.scores.append(float(score))
        area = max(float(box[2] - box[0]), 0.0) * max(float(box[3] - box[1]), 0.0)
        self.weight += float(score) * np.sqrt(area)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``[len(a), len(b)]`` of (x1, y1, x2, y2) boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter / np.maximum(union, 1e-9)


@dataclass
class Observation:
    """Where a track's face is in one frame (detected or filled in)."""

    track: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float


class Tracker:
    """Online linking of key-frame detections into tracks for one clip."""

    def __init__(
        self,
        link_iou: float = 0.3,
        link_centre: float = 0.5,
        max_gap: int = 3,
        max_faces: int = 3,
        min_face_size: float = 0.0,
    ) -> None:
        self.link_iou, self.link_centre = float(link_iou), float(link_centre)
        self.max_gap, self.max_faces, self.min_face_size = int(max_gap), int(max_faces), float(min_face_size)
        self.tracks: dict[int, Track] = {}
        self._last: dict[int, int] = {}  # track id -> key-frame count when last seen
        self._keys: list[int] = []
        self._at: dict[int, dict[int, int]] = {}  # key frame -> {track id: index in track lists}

    def update(self, frame: int, faces: Faces) -> None:
        """Link the detections of key frame ``frame`` (frames must come in increasing order)."""
        if self._keys and frame <= self._keys[-1]:
            raise ValueError(f"key frames must increase: {frame} after {self._keys[-1]}")
        k = len(self._keys)
        self._keys.append(frame)
        self._at[frame] = {}
        if len(faces):
            side = np.minimum(faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1])
            keep = np.nonzero(side >= self.min_face_size)[0]
            if len(keep) > self.max_faces:  # the biggest, most confident faces
                w = faces.scores[keep] * np.sqrt(np.clip(side[keep], 0, None))
                keep = keep[np.argsort(-w)[: self.max_faces]]
            faces = faces.filter(keep)
        live = [t for t, last in self._last.items() if k - last <= self.max_gap]
        pairs: list[tuple[int, int]] = []
        if live and len(faces):
            prev = np.stack([self.tracks[t].boxes[-1] for t in live])
            ov = iou(prev, faces.boxes)
            pc = (prev[:, :2] + prev[:, 2:]) / 2
            fc = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
            size = np.maximum(prev[:, 2:] - prev[:, :2], 1.0).mean(1)
            dist = np.linalg.norm(pc[:, None] - fc[None], axis=2) / size[:, None]
            cost = np.where(ov >= self.link_iou, 2.0 + ov, np.where(dist <= self.link_centre, 1.0 - dist, -1.0))
            while True:
                i, j = np.unravel_index(np.argmax(cost), cost.shape)
                if cost[i, j] < 0:
                    break
                pairs.append((live[i], int(j)))
                cost[i, :] = -1
                cost[:, j] = -1
        linked = {j for _, j in pairs}
        for j in range(len(faces)):
            if j not in linked:
                tid = len(self.tracks)
                self.tracks[tid] = Track(tid)
                pairs.append((tid, j))
        for tid, j in pairs:
            tr = self.tracks[tid]
            self._at[frame][tid] = len(tr.frames)
            tr.add(frame, faces.boxes[j], faces.landmarks[j], faces.scores[j])
            self._last[tid] = k

    def live_sizes(self) -> list[float]:
        """Face sides (px) of the tracks still linkable: a size hint for the next detection."""
        k = len(self._keys)
        out = []
        for t, last in self._last.items():
            if k - 1 - last <= self.max_gap:
                b = self.tracks[t].boxes[-1]
                out.append(float(max(b[2] - b[0], b[3] - b[1])))
        return out

    @property
    def key_frames(self) -> list[int]:
        return list(self._keys)

    def _obs(self, key: int, tid: int) -> Observation | None:
        i = self._at.get(key, {}).get(tid)
        if i is None:
            return None
        tr = self.tracks[tid]
        return Observation(tid, tr.boxes[i], tr.landmarks[i], tr.scores[i])

    def fill(self, start: int, stop: int, times: list[float] | None = None) -> dict[int, list[Observation]]:
        """Observations of every track for frames ``start <= f < stop`` (all inside key frames).

        With ``times`` (frame timestamps) interpolation follows time, not frame count, so
        variable-frame-rate video moves faces at their real pace.
        """
        out: dict[int, list[Observation]] = {}
        keys = self._keys
        if not keys:
            return out
        pos = int(np.searchsorted(keys, start, side="right")) - 1
        for f in range(start, stop):
            while pos + 1 < len(keys) and keys[pos + 1] <= f:
                pos += 1
            if pos < 0:
                continue
            a = keys[pos]
            if f == a or pos + 1 >= len(keys):
                out[f] = [o for t in self._at[a] if (o := self._obs(a, t)) is not None] if f == a else []
                continue
            b = keys[pos + 1]
            if times is not None and times[b] > times[a]:
                w = (times[f] - times[a]) / (times[b] - times[a])
            else:
                w = (f - a) / (b - a)
            obs = []
            for tid in set(self._at[a]) | set(self._at[b]):
                oa, ob = self._obs(a, tid), self._obs(b, tid)
                if oa is not None and ob is not None:
                    obs.append(Observation(tid, (1 - w) * oa.box + w * ob.box,
                                           (1 - w) * oa.landmarks + w * ob.landmarks,
                                           (1 - w) * oa.score + w * ob.score))
                elif oa is not None and w <= 0.5:
                    obs.append(oa)
                elif ob is not None and w > 0.5:
                    obs.append(ob)
            out[f] = obs
        return out

    def main_track(self) -> int | None:
        """The track to keep: highest ``sum(score * sqrt(area))``; ties -> the earlier track."""
        if not self.tracks:
            return None
        return max(self.tracks.values(), key=lambda t: (t.weight, -t.id)).id
