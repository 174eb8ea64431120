"""Face tracks within one clip: link detections over time, fill the frames between detections,
and pick the main face.

Detections arrive on key frames (every ``detect_every``-th frame). A detection joins the track
whose last box overlaps it most (IoU), or failing that whose centre is close relative to the face
size (fast motion between sparse key frames); otherwise it starts a new track. Frames between two
key frames get linearly interpolated boxes and landmarks when the track is seen at both ends, the
nearer key frame's face when seen at one end only (across a shot cut: each key frame's face
fills its own shot's frames). The main track
maximises ``sum(score * sqrt(area))`` over its key frames: long (temporally consistent), large,
confident.

A shot cut (``mark_cut``) ends every track: nothing links across it by position. The clip's
subject is then a *chain* of tracks that never overlap in time (``chain_subject``), seeded by
the main track and extended by identity (mean identity descriptors closer than the embedder's
same-person distance); only where identity is unknown or inconclusive, by continuity: the next
track starts within ``max_gap_s`` seconds, near where the last one ended, at a similar size.
A track identity calls a different person never joins, wherever it is.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        self.max_gap, self.max_faces, self.min_face_size = (
            int(max_gap),
            int(max_faces),
            float(min_face_size),
        )
        self.tracks: dict[int, Track] = {}
        self._last: dict[int, int] = {}  # track id -> key-frame count when last seen
        self._keys: list[int] = []
        self._at: dict[int, dict[int, int]] = {}  # key frame -> {track id: index in track lists}
        self.cuts: list[int] = []  # first frames of new shots (increasing)

    def mark_cut(self, frame: int) -> None:
        """A new shot starts at ``frame``: no track links or holds across it."""
        if not self.cuts or frame > self.cuts[-1]:
            self.cuts.append(int(frame))

    def cut_between(self, a: int, b: int) -> bool:
        """A cut at some frame ``c`` with ``a < c <= b``."""
        i = int(np.searchsorted(self.cuts, a, side="right"))
        return i < len(self.cuts) and self.cuts[i] <= b

    def update(self, frame: int, faces: Faces) -> None:
        """Link the detections of key frame ``frame`` (frames must come in increasing order)."""
        if self._keys and frame <= self._keys[-1]:
            raise ValueError(f"key frames must increase: {frame} after {self._keys[-1]}")
        k = len(self._keys)
        self._keys.append(frame)
        self._at[frame] = {}
        if len(faces):
            side = np.minimum(
                faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1]
            )
            keep = np.nonzero(side >= self.min_face_size)[0]
            if len(keep) > self.max_faces:  # the biggest, most confident faces
                w = faces.scores[keep] * np.sqrt(np.clip(side[keep], 0, None))
                keep = keep[np.argsort(-w)[: self.max_faces]]
            faces = faces.filter(keep)
        if self._keys[:-1] and self.cut_between(self._keys[-2], frame):
            self._last.clear()  # a new shot: every track ended
        live = [t for t, last in self._last.items() if k - last <= self.max_gap]
        pairs: list[tuple[int, int]] = []
        if live and len(faces):
            prev = np.stack([self.tracks[t].boxes[-1] for t in live])
            ov = iou(prev, faces.boxes)
            pc = (prev[:, :2] + prev[:, 2:]) / 2
            fc = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
            size = np.maximum(prev[:, 2:] - prev[:, :2], 1.0).mean(1)
            dist = np.linalg.norm(pc[:, None] - fc[None], axis=2) / size[:, None]
            cost = np.where(
                ov >= self.link_iou, 2.0 + ov, np.where(dist <= self.link_centre, 1.0 - dist, -1.0)
            )
            while True:
                i, j = map(int, np.unravel_index(np.argmax(cost), cost.shape))
                if cost[i, j] < 0:
                    break
                pairs.append((live[i], j))
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

    def is_key(self, frame: int) -> bool:
        """Whether ``frame`` was given to ``update`` (a key frame of this clip)."""
        return frame in self._at

    def detections_at(self, frame: int) -> dict[int, int]:
        """Key frame ``frame``'s kept detections: track id -> index in that track's lists
        (empty for a frame that is not a key frame or kept no face)."""
        return dict(self._at.get(frame, {}))

    def _obs(self, key: int, tid: int) -> Observation | None:
        i = self._at.get(key, {}).get(tid)
        if i is None:
            return None
        tr = self.tracks[tid]
        return Observation(tid, tr.boxes[i], tr.landmarks[i], tr.scores[i])

    def fill(
        self, start: int, stop: int, times: list[float] | None = None
    ) -> dict[int, list[Observation]]:
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
                out[f] = (
                    [o for t in self._at[a] if (o := self._obs(a, t)) is not None] if f == a else []
                )
                continue
            b = keys[pos + 1]
            if times is not None and times[b] > times[a]:
                w = (times[f] - times[a]) / (times[b] - times[a])
            else:
                w = (f - a) / (b - a)
            obs = []
            ci = int(np.searchsorted(self.cuts, a, side="right"))
            cut = self.cuts[ci] if ci < len(self.cuts) and self.cuts[ci] <= b else None
            for tid in set(self._at[a]) | set(self._at[b]):
                oa, ob = self._obs(a, tid), self._obs(b, tid)
                if oa is not None and ob is not None:
                    obs.append(
                        Observation(
                            tid,
                            (1 - w) * oa.box + w * ob.box,
                            (1 - w) * oa.landmarks + w * ob.landmarks,
                            (1 - w) * oa.score + w * ob.score,
                        )
                    )
                elif cut is not None:  # a shot cut in between: each side keeps its own shot
                    if oa is not None and f < cut:
                        obs.append(oa)
                    elif ob is not None and f >= cut:
                        obs.append(ob)
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


# ----------------------------------------------------------------------------- the subject


@dataclass
class TrackSummary:
    """What chaining needs of one track: the frames it has rows for, weight, end boxes, identity."""

    id: int
    frames: np.ndarray  # sorted frame indices with an observation
    weight: float
    first_box: np.ndarray
    last_box: np.ndarray
    identity: np.ndarray | None = None  # mean identity descriptor (None: not computed)


@dataclass
class Subject:
    """The chained tracks and how each joined (``seed``, ``identity`` or ``continuity``)."""

    tracks: list[int]
    how: dict[int, str]

    def runs(self, by_track: dict[int, np.ndarray]) -> list[list[int]]:
        """``[track, first frame, last frame + 1]`` runs of the subject's frames, in time order."""
        out: list[list[int]] = []
        for t in self.tracks:
            f = np.asarray(by_track[t])
            if not len(f):
                continue
            breaks = np.nonzero(np.diff(f) > 1)[0]
            starts = np.r_[0, breaks + 1]
            ends = np.r_[breaks, len(f) - 1]
            out += [[int(t), int(f[a]), int(f[b]) + 1] for a, b in zip(starts, ends, strict=True)]
        return sorted(out, key=lambda r: r[1])


def _gap_s(
    a: TrackSummary, b: TrackSummary, times: Sequence[float]
) -> tuple[float, TrackSummary, TrackSummary]:
    """Seconds between two non-overlapping tracks, and which comes first."""
    first, second = (a, b) if a.frames[-1] < b.frames[0] else (b, a)
    return float(times[int(second.frames[0])] - times[int(first.frames[-1])]), first, second


def continuous(
    prev: TrackSummary,
    nxt: TrackSummary,
    gap_s: float,
    max_gap_s: float,
    max_shift: float = 1.0,
    max_scale: float = 1.5,
) -> bool:
    """``nxt`` resumes ``prev``: soon enough, within ``max_shift`` face sides, similar size."""
    if gap_s > max_gap_s:
        return False
    pb, nb = prev.last_box, nxt.first_box
    ps, ns = (
        float(max(pb[2] - pb[0], pb[3] - pb[1], 1.0)),
        float(max(nb[2] - nb[0], nb[3] - nb[1], 1.0)),
    )
    shift = float(np.linalg.norm((pb[:2] + pb[2:]) / 2 - (nb[:2] + nb[2:]) / 2)) / max(ps, ns)
    return shift <= max_shift and max(ps, ns) / min(ps, ns) <= max_scale


def chain_subject(
    tracks: Sequence[TrackSummary],
    times: Sequence[float],
    same_below: float = 0.5,
    different_above: float = 0.6,
    max_gap_s: float = 1.0,
) -> Subject:
    """The subject's tracks: the heaviest track, plus every track that does not overlap the chain
    in time and is the same person (identity), or, where identity cannot tell, continues a
    chain track (``continuous``). Candidates are tried heaviest first until nothing joins."""
    tracks = [t for t in tracks if len(t.frames)]
    if not tracks:
        return Subject([], {})
    seed = max(tracks, key=lambda t: (t.weight, -t.id))
    chain = [seed]
    how = {seed.id: "seed"}
    used = set(seed.frames.tolist())
    rest = sorted((t for t in tracks if t.id != seed.id), key=lambda t: (-t.weight, t.id))
    changed = True
    while changed:
        changed = False
        ids = [t.identity for t in chain if t.identity is not None]
        ref = np.mean(ids, 0) if ids else None
        for t in list(rest):
            if used.intersection(t.frames.tolist()):
                continue  # the subject is one face per frame
            d = (
                None
                if ref is None or t.identity is None
                else float(np.linalg.norm(t.identity - ref))
            )
            if d is not None and d >= different_above:
                continue  # someone else, wherever they are
            if d is not None and d < same_below:
                joined = "identity"
            else:
                joined = ""
                for c in chain:
                    gap, first, second = _gap_s(c, t, times)
                    if continuous(first, second, gap, max_gap_s):
                        joined = "continuity"
                        break
            if joined:
                chain.append(t)
                how[t.id] = joined
                used.update(t.frames.tolist())
                rest.remove(t)
                changed = True
                break  # the reference identity changed: rescan from the heaviest
    return Subject(
        sorted((t.id for t in chain), key=lambda i: next(t.frames[0] for t in chain if t.id == i)),
        how,
    )


def longest_gap_s(mask: np.ndarray, times: np.ndarray) -> float:
    """Longest stretch (seconds) of consecutive frames without the subject."""
    mask = np.asarray(mask, bool)
    if mask.all() or not len(mask):
        return 0.0
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    pad = np.r_[True, mask, True]
    starts = np.nonzero(pad[:-1] & ~pad[1:])[0]  # first masked-out frame of each gap
    ends = np.nonzero(~pad[:-1] & pad[1:])[0]  # one past its last
    return float(max(times[e - 1] - times[s] + step for s, e in zip(starts, ends, strict=True)))
