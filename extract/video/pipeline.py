"""The batched face pipeline: decode workers -> detect -> track -> align -> face CNN.

Worker processes decode clips and stream frame chunks through a bounded queue. The main process
cuts each clip into fixed blocks of consecutive frames (``batch_frames``, fewer for big frames:
``block_frames``) and handles a block as soon as all its frames are there: the detector runs on
the block's key frames (every ``detect_every``-th frame of the clip, plus its last; with
``stable_every`` > 1 only on every n-th of them and on those between two that disagree), detections
are linked into tracks, the frames between key frames are filled, and every tracked face is
aligned and embedded in one CNN call per block. Every network therefore sees the same inputs in
the same batches whatever order the decoders deliver frames in, and a clip's values are a
function of the clip alone (resumed, distributed and uninterrupted runs write the same bytes):
MTCNN's R/O-Net and the CNNs pick kernels by batch size, so a frame batched with other clips'
frames moved boxes by ~5e-5 px and features by ~4e-4 (tests/test_faces_determinism.py). Only a
clip's unfinished block is held, so memory stays bounded; per-track rows are kept until the clip
ends, when the clip's subject is chained from its tracks (by identity, else continuity:
``tracks.chain_subject``) and the clip's ``ClipFeatures`` is yielded (the runner's writer thread
writes it) with the subject's statistics in ``info``. Shot cuts (a jump in a tiny grey thumbnail
between consecutive frames) end every track.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from avemo import settings
from avemo.data.store import ClipFeatures
from avemo.extract.base import ClipInput
from avemo.extract.video.align import CropSpec, crop_faces
from avemo.extract.video.decode import (
    DecodeError,
    DecodeStats,
    FrameChunk,
    FrameRing,
    SlotChunk,
    decode_worker,
    iter_frames,
    lookahead_frames,
)

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext, SpawnContext
from avemo.extract.video.detectors.base import Detector, Faces
from avemo.extract.video.tracks import Tracker, TrackSummary, chain_subject, iou, longest_gap_s


@dataclass
class Embedder:
    """Aligned crops -> rows. ``fn(uint8 [N, S, S, 3]) -> array [N, *row_shape]``."""

    fn: Callable[[np.ndarray], np.ndarray]
    size: int
    margin: float
    row_shape: tuple[int, ...]
    dtype: Any = np.float32
    crop: CropSpec | None = None  # None: the ArcFace template with ``margin``

    @property
    def crop_spec(self) -> CropSpec:
        return self.crop if self.crop is not None else CropSpec("template", float(self.margin))


@dataclass
class StageTimes:
    """Seconds per stage (decode is summed over worker processes) and counts."""

    decode: float = 0.0
    wait: float = 0.0  # main process blocked on the decoders
    detect: float = 0.0
    track: float = 0.0
    align: float = 0.0
    embed: float = 0.0
    identity: float = 0.0
    frames: int = 0
    key_frames: int = 0  # key frames the detector ran on
    schedule_keys: int = (
        0  # key frames of the schedule (``detect_every``), detected or skipped as stable
    )
    crops: int = 0
    clips: int = 0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(eq=False)
class _Clip:
    key: int
    clip: ClipInput
    tracker: Tracker
    times: list[float] = field(default_factory=list)
    buffer: dict[int, np.ndarray] = field(default_factory=dict)  # frames not yet resolved
    size: int = 0  # frames per block (set by the first frame: ``FacePipeline.block_frames``)
    block: int = 0  # the next block to detect: frames [block * size, (block + 1) * size)
    resolved: int = 0  # frames < resolved have their observations
    n_keys: int = 0  # key frames the detector ran on
    n_sched: int = 0  # key frames of the schedule so far, detected or skipped as stable
    face_before: bool = False  # the detector found a face on the last scheduled key frame
    last_found: tuple[int, Faces] | None = None  # the last scheduled key frame and its faces
    pending: list[int] = field(
        default_factory=list
    )  # skipped key frames after it (next block decides)
    ended: bool = False
    stats: DecodeStats | None = None
    rows: dict[int, tuple[list[int], list[np.ndarray]]] = field(default_factory=dict)
    thumb: np.ndarray | None = None  # previous frame's cut-detection thumbnail
    id_chips: dict[int, list[np.ndarray]] = field(default_factory=dict)  # identity chips per track
    id_seen: dict[int, int] = field(default_factory=dict)  # key-frame detections per track
    id_stride: dict[int, int] = field(default_factory=dict)  # chips kept every stride-th detection

    @property
    def n(self) -> int:
        return len(self.times)


def default_workers() -> int:
    """Decode processes: ``$AVEMO_DECODE_WORKERS`` or cores - 1 (at most 4; 0 = decode inline)."""
    env = settings.current().decode_workers
    if env is not None:
        return env
    return max(1, min(4, (os.cpu_count() or 2) - 1))


@dataclass(eq=False)
class _Worker:
    proc: Any
    tasks: Any
    jobs: collections.deque = field(default_factory=collections.deque)  # sent, not finished


class DecodePool:
    """Persistent decode worker processes (forked: no re-import, fast start).

    The parent hands each worker at most ``per_worker`` clips at a time (load balancing) and
    remembers which, so a worker that dies (e.g. FFmpeg crashed) fails exactly the clip it was
    decoding; its other clips go to a fresh worker. With ``shm`` (fork only) each worker writes
    its frames into its own ``FrameRing`` of shared memory; the rings are unlinked by ``close``
    (a failed or interrupted run closes the pool) or at interpreter exit.
    """

    def __init__(
        self,
        workers: int,
        queue_chunks: int = 6,
        per_worker: int = 2,
        shm: bool = True,
        threads: bool = True,
        height: int | None = None,
    ) -> None:
        self.n = workers
        self.per_worker = per_worker
        fork = "fork" in mp.get_all_start_methods()
        self.ctx: ForkContext | SpawnContext = (
            mp.get_context("fork") if fork else mp.get_context("spawn")
        )
        self.shm = bool(shm) and fork  # spawned workers would re-attach by name: keep the queue
        self.threads = bool(threads)  # FFmpeg's own decoding threads in each worker
        self.height = height  # frames converted at this height (aspect kept); None: as stored
        self.events = self.ctx.Queue(maxsize=max(2, queue_chunks))
        self.workers: list[_Worker] = []
        self.rings: dict[int, FrameRing] = {}
        self.target = decode_worker

    def _spawn(self) -> _Worker:
        tasks = self.ctx.Queue()
        kwargs: dict[str, Any] = {"threads": self.threads, "height": self.height}
        if self.shm:
            ring = FrameRing(self.ctx)
            self.rings[ring.id] = (
                ring  # kept until close: a dead worker's chunks may still be queued
            )
            kwargs["ring"] = ring
        p = self.ctx.Process(
            target=self.target, args=(tasks, self.events), kwargs=kwargs, daemon=True
        )
        p.start()
        return _Worker(p, tasks)

    def run(self, jobs: Sequence[tuple[int, str, float | None]]) -> Iterator[tuple | None]:
        """Events for ``jobs``; ``None`` when nothing is ready right now (the caller may flush)."""
        while len(self.workers) < self.n:
            self.workers.append(self._spawn())
        todo = collections.deque(jobs)
        open_keys = {k for k, _, _ in jobs}

        def feed() -> None:
            for w in self.workers:
                while todo and len(w.jobs) < self.per_worker:
                    job = todo.popleft()
                    w.tasks.put(job)
                    w.jobs.append(job)

        feed()
        while open_keys:
            try:
                ev = self.events.get(timeout=0.002)
            except queue.Empty:
                yield None
                try:
                    ev = self.events.get(timeout=1.0)
                except queue.Empty:
                    yield from self._reap(open_keys, todo)
                    feed()
                    continue
            if ev[0] == "start":
                continue
            if ev[0] == "chunk" and isinstance(ev[2], SlotChunk):
                ev = ("chunk", ev[1], self.rings[ev[2].ring].take(ev[2]))
            if ev[0] in ("end", "error"):
                open_keys.discard(ev[1])
                for w in self.workers:
                    w.jobs = collections.deque(j for j in w.jobs if j[0] != ev[1])
                feed()
            yield ev

    def _reap(self, open_keys: set[int], todo: collections.deque) -> Iterator[tuple]:
        for i, w in enumerate(self.workers):
            if w.proc.is_alive():
                continue
            if w.jobs:
                key = w.jobs.popleft()[0]  # the clip it was decoding (they run in order)
                if key in open_keys:
                    open_keys.discard(key)
                    yield (
                        "error",
                        key,
                        f"decoder process died (exit code {w.proc.exitcode})",
                        DecodeStats(),
                    )
                todo.extendleft(reversed(w.jobs))  # never started: to the replacement worker
            self.workers[i] = self._spawn()

    def close(self) -> None:
        for w in self.workers:
            w.tasks.put(None)
        for w in self.workers:
            w.proc.join(timeout=2)
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(timeout=2)
        self.workers = []
        for ring in self.rings.values():
            ring.close()
        self.rings = {}


def _inline(jobs: Sequence[tuple[int, str, float | None]]) -> Iterator[tuple | None]:
    for key, path, fps in jobs:
        stats = DecodeStats()
        try:
            for ch in iter_frames(path, fps=fps, stats=stats):
                yield ("chunk", key, ch)
            yield ("end", key, stats)
        except Exception as e:  # noqa: BLE001 - the clip's error status
            yield (
                "error",
                key,
                str(e) if isinstance(e, DecodeError) else f"{type(e).__name__}: {e}",
                stats,
            )


class FacePipeline:
    """Frames of many clips -> one row per frame of the main face (see module doc)."""

    def __init__(
        self,
        detector: Detector,
        embedder: Embedder,
        fps: float | None = None,
        detect_every: int = 1,
        batch_frames: int = 64,
        min_face_size: float = 0.0,
        max_faces: int = 3,
        link_iou: float = 0.3,
        full_detect_every: int = 1,
        workers: int | None = None,
        embed_batch: int = 256,
        identity: Any = None,
        max_gap_s: float = 1.0,
        cut_threshold: float = 15.0,
        identity_chips: int = 3,
        stable_every: int = 1,
        stable_iou: float = 0.5,
    ) -> None:
        if int(detect_every) < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        if int(stable_every) < 1:
            raise ValueError(f"stable_every must be >= 1, got {stable_every}")
        self.detector, self.embedder = detector, embedder
        self.fps = float(fps) if fps else None
        self.detect_every = int(detect_every)
        self.batch_frames = max(1, int(batch_frames))
        self.min_face_size, self.max_faces, self.link_iou = (
            float(min_face_size),
            int(max_faces),
            float(link_iou),
        )
        self.workers = default_workers() if workers is None else int(workers)
        self.embed_batch = int(embed_batch)
        self.full_detect_every = max(1, int(full_detect_every))
        # track and verify: the detector runs on every stable_every-th key frame (and a block's
        # last); the key frames between only where the two around disagree (``_stable``)
        self.stable_every, self.stable_iou = int(stable_every), float(stable_iou)
        # the subject across gaps and cuts: identity embedder (None: continuity only), the
        # longest gap continuity may bridge, the thumbnail jump that counts as a cut (grey
        # levels, mean |difference| of 32x18 thumbnails; 0 disables), chips embedded per track
        self.identity = identity
        self.max_gap_s, self.cut_threshold = float(max_gap_s), float(cut_threshold)
        self.identity_chips = max(1, int(identity_chips))
        self.times = StageTimes()
        self._pool: DecodePool | None = None
        self._keys = 0
        self.threads: int | None = (
            None  # torch intra-op threads while running (None: see torch_threads)
        )
        self.shm = True  # frames from the decode workers through shared memory (False: pickled, the old path)
        # FFmpeg threads in the decode workers: off, since the workers share the cores with detection and
        # the CNN (transport bench, quiet 2-core machine: 62-71 % vs 55-65 % of decode-only in 4 paired rounds)
        self.decode_threads = False
        self.decode_height: int | None = (
            None  # experiment (transport bench): frames converted at this height
        )
        self.fit_blocks = (
            True  # blocks no longer than the decode worker's look-ahead (False: batch_frames)
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def torch_threads(self) -> int:
        """Compute threads: the cores the decoders leave (small convs lose badly to oversubscription)."""
        if self.threads:
            return self.threads
        return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - max(self.workers, 0)))

    def _events(self, jobs: list[tuple[int, str, float | None]]) -> Iterator[tuple | None]:
        """The decoders' events (``chunk``/``end``/``error``; ``None``: nothing ready yet), in
        whatever order they come: the results must not depend on it (tests feed other orders)."""
        if self.workers <= 0 or not jobs:
            return _inline(jobs)
        if self._pool is None:
            self._pool = DecodePool(
                self.workers, shm=self.shm, threads=self.decode_threads, height=self.decode_height
            )
        return self._pool.run(jobs)

    def run(self, clips: Sequence[ClipInput]) -> Iterator[ClipFeatures]:
        """One ``ClipFeatures`` per clip, in completion order; a bad clip gets status ``error``,
        one without a video path ``no_video``."""
        states: dict[int, _Clip] = {}
        jobs = []
        base, self._keys = self._keys, self._keys + len(clips)  # keys unique across runs
        for key, c in enumerate(clips, start=base):
            if not c.video:
                yield self._empty(c, "no_video", "no video path in the manifest")
                continue
            states[key] = _Clip(
                key,
                c,
                Tracker(self.link_iou, max_faces=self.max_faces, min_face_size=self.min_face_size),
            )
            jobs.append((key, str(c.video), self.fps))
        finished = False
        threads = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads())
        try:
            t_wait = time.perf_counter()
            for ev in self._events(jobs):
                if ev is None:
                    continue
                self.times.wait += time.perf_counter() - t_wait
                kind, key = ev[0], ev[1]
                st = states[key]
                if kind == "chunk":
                    self._take(st, ev[2])
                elif kind == "end":
                    st.ended, st.stats = True, ev[2]
                    self.times.decode += ev[2].seconds
                else:  # error
                    del states[key]
                    self.times.decode += ev[3].seconds
                    yield self._empty(st.clip, "error", ev[2])
                    t_wait = time.perf_counter()
                    continue
                self._advance(st)
                if st.ended:
                    del states[key]
                    yield self._finish(st)
                t_wait = time.perf_counter()
            for key in list(states):  # a decoder that ended without an end event: never expected
                st = states.pop(key)
                yield self._empty(st.clip, "error", "decoding stopped without an end of stream")
            finished = True
        finally:
            torch.set_num_threads(threads)
            if not finished:  # abandoned mid-run: stale events would leak into the next run
                self.close()

    # ------------------------------------------------------------------ batch processing

    def block_frames(self, frame: np.ndarray) -> int:
        """Frames per block of a clip with such frames: ``batch_frames``, but no more than a decode
        worker runs ahead (4 chunks: 16 frames at 720p, 52 at 360p). A longer block stalls the worker
        while the main process works on it, then the main process waits for the rest (RAVDESS 720p:
        40 / 29 % of decode-only with 64-frame blocks, 40 / 40 % with 16; short 360p clips are
        faster with long blocks: fewer, bigger detector and CNN calls). A function of the clip's
        frame size alone, so values stay a function of the clip."""
        if not self.fit_blocks:
            return self.batch_frames
        return max(1, min(self.batch_frames, lookahead_frames(frame.nbytes)))

    def _take(self, st: _Clip, ch: FrameChunk) -> None:
        if not st.size and len(ch):
            st.size = self.block_frames(ch.frames[0])
        for i, t, img in zip(ch.index, ch.times, ch.frames, strict=True):
            st.times.append(float(t))
            st.buffer[int(i)] = img
            if self.cut_threshold > 0:
                thumb = thumbnail(img)
                if (
                    st.thumb is not None
                    and float(np.abs(thumb - st.thumb).mean()) > self.cut_threshold
                ):
                    st.tracker.mark_cut(int(i))
                st.thumb = thumb

    def _ready_blocks(self, st: _Clip) -> Iterator[list[int]]:
        """Key frames of each block whose frames have all arrived, in order. A block is complete
        when a later frame has arrived (so the clip's last frame is not in it) or the clip ended;
        its key frames are the multiples of ``detect_every`` in it, plus the clip's last frame."""
        size, every = st.size, self.detect_every
        while st.block * size < st.n and (st.n > (st.block + 1) * size or st.ended):
            lo, hi = st.block * size, min((st.block + 1) * size, st.n)
            keys = list(range(-(-lo // every) * every, hi, every))
            if st.ended and hi == st.n and (not keys or keys[-1] != hi - 1):
                keys.append(hi - 1)  # the last frame is always a key frame: nothing after it
            st.block += 1
            yield keys

    def _advance(self, st: _Clip) -> None:
        """Detect, track, align and embed every complete block of ``st`` (see module doc)."""
        for keys in self._ready_blocks(st):
            if keys:
                self._detect(st, keys)
            self._embed_resolved(st)
        for f in [f for f in st.buffer if f < st.resolved]:
            del st.buffer[f]

    def _detect(self, st: _Clip, keys: list[int]) -> None:
        """Detect the block's scheduled key frames, then the skipped ones between two scheduled
        ones that disagree (skipped ones after the block's last scheduled one wait for the next
        block's first), and link them all in frame order. A skipped key frame is none for the
        tracker: its frames are filled between the detected ones like any other frame."""
        t0 = time.perf_counter()
        sched = [
            k
            for j, k in enumerate(keys)
            if (st.n_sched + j) % self.stable_every == 0 or (st.ended and k == st.n - 1)
        ]
        st.n_sched += len(keys)
        self.times.schedule_keys += len(keys)
        found = dict(zip(sched, self._run_detector(st, sched), strict=True))
        verify: list[int] = []
        between: list[int] = []  # skipped key frames since the last scheduled one
        prev = st.last_found
        for k in sorted(st.pending + keys):
            if k not in found:
                between.append(k)
                continue
            if between and (
                prev is None
                or st.tracker.cut_between(prev[0], k)
                or not self._stable(prev[1], found[k])
            ):
                verify += between
            between, prev = [], (k, found[k])
        st.pending = between
        if (
            verify
        ):  # plain ``detect``: with blazeface_mtcnn, MTCNN on every empty one (next to faces)
            hints = [self._size_hint(st) for _ in verify]
            found.update(
                zip(
                    verify,
                    self.detector.detect([st.buffer[i] for i in verify], sizes=hints),
                    strict=True,
                )
            )
        self.times.detect += time.perf_counter() - t0
        self.times.key_frames += len(found)
        t0 = time.perf_counter()
        for i in sorted(found):
            st.tracker.update(i, found[i])
        if sched:
            st.last_found = (sched[-1], found[sched[-1]])
            st.face_before = bool(len(found[sched[-1]]))
        self.times.track += time.perf_counter() - t0

    def _run_detector(self, st: _Clip, keys: list[int]) -> list[Faces]:
        """The detector on consecutive scheduled key frames of one clip (its temporal context)."""
        if not keys:  # a short block with no scheduled key frame: its key frames wait
            return []
        first = st.n_keys
        hints = [self._size_hint(st) for _ in keys]
        frames = [st.buffer[i] for i in keys]
        clip_aware = getattr(self.detector, "detect_clip", None)
        if clip_aware is not None:
            return clip_aware(frames, sizes=hints, first=first, face_before=st.face_before)
        return self.detector.detect(frames, sizes=hints)  # a plugin detector without the base class

    def _stable(self, a: Faces, b: Faces) -> bool:
        """Two key frames' detections agree: as many faces, each overlapping one of the other's
        by IoU >= ``stable_iou`` (no faces in either also agrees)."""
        if len(a) != len(b):
            return False
        if not len(a):
            return True
        ov = iou(a.boxes, b.boxes)
        return bool((ov.max(1) >= self.stable_iou).all() and (ov.max(0) >= self.stable_iou).all())

    def _embed_resolved(self, st: _Clip) -> None:
        """Observations of the frames up to the last key frame, aligned and embedded together."""
        jobs: list[tuple[int, int]] = []  # (frame, track)
        frames: list[np.ndarray] = []
        lmks: list[np.ndarray] = []
        boxes: list[np.ndarray] = []
        t0 = time.perf_counter()
        kf = st.tracker.key_frames
        upto = kf[-1] + 1 if kf else 0
        if upto <= st.resolved:
            return
        for f, obs in st.tracker.fill(st.resolved, upto, st.times).items():
            for o in obs:
                jobs.append((f, o.track))
                frames.append(st.buffer[f])
                lmks.append(o.landmarks)
                boxes.append(o.box)
            if self.identity is not None:
                self._identity_chips(st, f)
        st.resolved = upto
        self.times.track += time.perf_counter() - t0
        if not jobs:
            return
        t0 = time.perf_counter()
        crops = crop_faces(
            frames,
            np.arange(len(frames)),
            np.stack(boxes),
            np.stack(lmks),
            self.embedder.size,
            self.embedder.crop_spec,
        )
        self.times.align += time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = np.concatenate(
            [
                self.embedder.fn(crops[i : i + self.embed_batch])
                for i in range(0, len(crops), self.embed_batch)
            ]
        )
        self.times.embed += time.perf_counter() - t0
        self.times.crops += len(crops)
        for (f, tid), row in zip(jobs, rows, strict=True):
            idx, vals = st.rows.setdefault(tid, ([], []))
            idx.append(f)
            vals.append(row)

    def _identity_chips(self, st: _Clip, f: int) -> None:
        """Keep identity chips of the faces detected on key frame ``f``: at most
        ``4 * identity_chips`` per track, spread over the track (the stride doubles when full)."""
        at = st.tracker.detections_at(f)
        if not at:
            return
        cap = 4 * self.identity_chips
        for tid, i in at.items():
            seen = st.id_seen.get(tid, 0)
            st.id_seen[tid] = seen + 1
            kept = st.id_chips.setdefault(tid, [])
            stride = st.id_stride.get(tid, 1)
            if seen % stride:
                continue
            if len(kept) >= cap:  # kept = detections 0, s, 2s, ...: keep 0, 2s, 4s, ...
                del kept[1::2]
                stride = st.id_stride[tid] = 2 * stride
                if seen % stride:
                    continue
            lmk = st.tracker.tracks[tid].landmarks[i]
            kept.append(self.identity.chips([st.buffer[f]], [0], lmk[None])[0])

    def _size_hint(self, st: _Clip) -> tuple[float, float] | None:
        """Search only faces of about the tracked size (x0.5 .. x2), except on every
        ``full_detect_every``-th key frame of a clip (and while nothing is tracked)."""
        st.n_keys += 1
        if (st.n_keys - 1) % self.full_detect_every == 0:
            return None
        sizes = st.tracker.live_sizes()
        return (min(sizes) / 2.0, max(sizes) * 2.0) if sizes else None

    # ------------------------------------------------------------------ results

    def _empty(self, clip: ClipInput, status: str, message: str) -> ClipFeatures:
        self.times.clips += 1
        return ClipFeatures.empty(
            clip.clip_id, self.embedder.row_shape, status, message, self.embedder.dtype
        )

    def _finish(self, st: _Clip) -> ClipFeatures:
        n = st.n
        self.times.clips += 1
        self.times.frames += n
        notes = list(st.stats.notes) if st.stats else []
        if st.stats and st.stats.rotation:
            notes.append(f"rotated {st.stats.rotation} deg (display matrix)")
        if n == 0:
            return self._empty(st.clip, "error", "; ".join(["no video frames decoded", *notes]))
        values = np.zeros((n, *self.embedder.row_shape), self.embedder.dtype)
        mask = np.zeros(n, bool)
        subject = self._subject(st)
        track_of = np.full(n, -1, np.int64)
        for tid in subject.tracks:
            idx, vals = st.rows[tid]
            values[idx] = np.stack(vals)
            mask[idx] = True
            track_of[idx] = tid
        have = int(mask.sum())
        times = np.asarray(st.times, np.float64)
        by_track = {t: np.nonzero(track_of == t)[0] for t in subject.tracks}
        info = {
            "tracks": len(st.tracker.tracks),
            "subject_tracks": len(subject.tracks),
            "subject_frames": have,
            "frames": n,
            "longest_gap_s": round(longest_gap_s(mask, times), 3)
            if have
            else round(float(times[-1] - times[0]), 3),
            "cuts": len(st.tracker.cuts),
            "joined": {str(t): subject.how[t] for t in subject.tracks},
            "track_runs": subject.runs(by_track),
        }
        if len(st.tracker.tracks) > 1:
            how = ", ".join(
                f"{sum(1 for v in subject.how.values() if v == k)} by {k}"
                for k in ("identity", "continuity")
                if k in subject.how.values()
            )
            notes.insert(
                0,
                f"{len(st.tracker.tracks)} face tracks, subject = {len(subject.tracks)}"
                + (f" ({how})" if how else ""),
            )
        if have == 0:
            status = "no_face"
            notes.insert(0, f"no face found in any of the {n} frames")
        else:
            status = "ok"
            if have < n:
                notes.insert(0, f"{n - have} of {n} frames without a face (mask 0)")
        return ClipFeatures(
            st.clip.clip_id, values, times, mask, status, "; ".join(notes), info=info
        )

    def _subject(self, st: _Clip) -> Any:
        """Chain the clip's tracks into its subject (identity embedded only when there is a choice)."""
        summaries = []
        for tid, tr in st.tracker.tracks.items():
            if tid not in st.rows:
                continue
            summaries.append(
                TrackSummary(
                    tid,
                    np.asarray(sorted(st.rows[tid][0]), np.int64),
                    tr.weight,
                    tr.boxes[0],
                    tr.boxes[-1],
                )
            )
        if self.identity is not None and len(summaries) > 1:
            t0 = time.perf_counter()
            for s in summaries:
                chips = st.id_chips.get(s.id, [])
                if chips:
                    pick = (
                        np.linspace(0, len(chips) - 1, min(self.identity_chips, len(chips)))
                        .round()
                        .astype(int)
                    )
                    s.identity = self.identity.embed(np.stack([chips[i] for i in pick])).mean(0)
            self.times.identity += time.perf_counter() - t0
        same, diff = (
            (self.identity.same_below, self.identity.different_above)
            if self.identity
            else (0.0, 1e9)
        )
        return chain_subject(summaries, st.times, same, diff, self.max_gap_s)


def thumbnail(img: np.ndarray) -> np.ndarray:
    """32x18 grey float thumbnail (shot-cut detection): every k-th pixel (~90 rows), area-averaged;
    0.1 ms for a 720p frame, against 1.5 ms for area-averaging every pixel."""
    k = max(1, min(img.shape[0], img.shape[1]) // 90)
    small = cv2.resize(img[::k, ::k], (32, 18), interpolation=cv2.INTER_AREA).astype(np.float32)
    return small @ np.array([0.299, 0.587, 0.114], np.float32)


def report(times: StageTimes, file: Any = sys.stderr) -> None:
    """One line of per-stage seconds (debugging / benchmarks)."""
    d = times.as_dict()
    print(
        "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items()),
        file=file,
    )
