"""Video decoding with PyAV: streamed frames, container timestamps, rotation honoured.

Frames are produced in small chunks so memory stays bounded for long videos. Timestamps are the
frames' own presentation times (``frame.time``), relative to the container start, so variable
frame rate videos keep their true timing. The display matrix (phone videos) is applied so faces
are upright.
"""

from __future__ import annotations

import itertools
import os
import queue
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import av  # imported here, not lazily: forked decode workers then never import anything
import cv2
import numpy as np

CHUNK_FRAMES = 16  # frames per chunk at most ...
CHUNK_BYTES = 8 << 20  # ... and about this many bytes of pixels
RING_SLOTS = 4  # chunks a decode worker can run ahead of the main process (shared-memory slots)


def lookahead_frames(frame_bytes: int) -> int:
    """Frames a decode worker can run ahead of the main process for frames of this size."""
    return RING_SLOTS * max(1, min(CHUNK_FRAMES, -(-CHUNK_BYTES // max(1, int(frame_bytes)))))


class DecodeError(RuntimeError):
    """The file cannot be opened or holds no decodable video stream."""


@dataclass
class FrameChunk:
    """Consecutive decoded frames of one clip: ``frames [n, H, W, 3]`` uint8 RGB."""

    index: np.ndarray  # int64 [n], position in the clip's output sequence (0, 1, 2, ...)
    times: np.ndarray  # float64 [n], seconds from the container start
    frames: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class DecodeStats:
    frames: int = 0
    seconds: float = 0.0  # wall time spent decoding + converting to RGB
    rotation: int = 0
    dropped: int = 0  # frames dropped because their timestamp did not increase
    notes: list[str] = field(default_factory=list)


def display_rotation(angle: float | int | None) -> int:
    """Counter-clockwise quarter turns (0..3) that make a frame upright.

    PyAV reports the display matrix rotation as degrees counter-clockwise (FFmpeg's
    ``av_display_rotation_get``); rotating the stored image by that angle gives the picture as
    players show it. A phone's ``rotate=90`` tag reads as -90 here: one clockwise turn.
    """
    if not angle:
        return 0
    return int(round(float(angle) / 90.0)) % 4


def _open(path: str | os.PathLike[str]):  # noqa: ANN202 - av.container.InputContainer
    p = Path(path)
    if not p.exists():
        raise DecodeError(f"{p}: file does not exist")
    try:
        container = av.open(str(p))
    except Exception as e:  # noqa: BLE001 - any FFmpeg failure is a decode error for this clip
        raise DecodeError(f"{p}: cannot open ({type(e).__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise DecodeError(f"{p}: no video stream")
    return container


def _frames(
    path: str | os.PathLike[str],
    fps: float | None,
    stats: DecodeStats,
    threads: bool = True,
    height: int | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """``(time, upright RGB frame)`` per kept frame. The frame may be a view into FFmpeg's
    buffer (line padding, rotation): copy it before the next one is decoded."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        tb = float(stream.time_base) if stream.time_base else None
        start = container.start_time / 1e6 if container.start_time is not None else None
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        step = 1.0 / fps if fps else None
        next_t: float | None = None
        last_t = -np.inf
        for frame in container.decode(stream):
            if frame.time is not None:
                t = float(frame.time)
            elif frame.pts is not None and tb is not None:
                t = frame.pts * tb
            else:
                t = (last_t + 1.0 / rate) if np.isfinite(last_t) else 0.0
            if start is not None:
                t -= start
            if t <= last_t:
                stats.dropped += 1
                continue
            last_t = t
            if step is not None:
                if next_t is None:
                    next_t = t
                if t + 1e-6 < next_t:
                    continue
                while next_t <= t + 1e-6:
                    next_t += step
            if height and frame.height > height:  # scaled in the same swscale pass (an experiment)
                w = 2 * round(frame.width * height / frame.height / 2)
                img = frame.to_ndarray(format="rgb24", width=w, height=int(height))
            else:
                img = frame.to_ndarray(format="rgb24")  # a view on the converted frame (no copy)
            k = display_rotation(frame.rotation)
            if k:
                stats.rotation = k * 90
                img = np.rot90(img, k)
            yield t, img
        if stats.dropped:
            stats.notes.append(f"{stats.dropped} frames with non-increasing timestamps dropped")
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - FFmpeg errors mid-stream
        raise DecodeError(
            f"{path}: decoding failed after {stats.frames} frames ({type(e).__name__}: {e})"
        ) from None
    finally:
        container.close()


def iter_frames(
    path: str | os.PathLike[str],
    fps: float | None = None,
    chunk: int = CHUNK_FRAMES,
    stats: DecodeStats | None = None,
    threads: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[FrameChunk]:
    """Decode ``path`` into chunks of upright RGB frames.

    ``fps=None`` keeps every frame; otherwise the first frame at or after each sampling instant
    ``t0 + k / fps`` is kept (variable-frame-rate safe: it follows timestamps, not frame counts).
    Frames whose timestamp does not increase (broken muxes) are dropped and counted. A chunk
    holds at most ``chunk`` frames and about ``chunk_bytes`` of pixels.
    """
    stats = stats if stats is not None else DecodeStats()
    buf_t: list[float] = []
    buf_f: list[np.ndarray] = []
    n_out = 0
    t_clock = time.perf_counter()
    for t, img in _frames(path, fps, stats, threads):
        buf_t.append(t)
        buf_f.append(img)  # np.stack in _chunk copies it
        if len(buf_f) >= chunk or len(buf_f) * img.nbytes >= chunk_bytes:
            yield _chunk(n_out, buf_t, buf_f, stats, t_clock)
            n_out += len(buf_f)
            buf_t, buf_f = [], []
            t_clock = time.perf_counter()
    if buf_f:
        yield _chunk(n_out, buf_t, buf_f, stats, t_clock)


def _chunk(
    n0: int, ts: list[float], fs: list[np.ndarray], stats: DecodeStats, t0: float
) -> FrameChunk:
    if len({f.shape for f in fs}) > 1:  # resolution change mid-stream: pad/crop to the first
        h, w = fs[0].shape[:2]
        fs = [f if f.shape == fs[0].shape else _fit(f, h, w) for f in fs]
    out = FrameChunk(
        np.arange(n0, n0 + len(fs), dtype=np.int64), np.asarray(ts, np.float64), np.stack(fs)
    )
    stats.frames += len(fs)
    stats.seconds += time.perf_counter() - t0
    return out


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    return cv2.resize(
        np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_AREA
    )  # rot90 views


def read_all(
    path: str | os.PathLike[str], fps: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every (sampled) frame at once: ``(times [T], frames [T, H, W, 3])``. Short clips/tests only."""
    chunks = list(iter_frames(path, fps=fps))
    if not chunks:
        return np.zeros(0), np.zeros((0, 0, 0, 3), np.uint8)
    return np.concatenate([c.times for c in chunks]), np.concatenate([c.frames for c in chunks])


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray | list[np.ndarray],
    fps: float = 25.0,
    rotation: int = 0,
    times: list[float] | None = None,
    codec: str = "libx264",
) -> Path:
    """Encode RGB frames with PyAV (tests, demo clips). ``rotation``: display matrix, degrees CCW.

    ``times`` (seconds) gives explicit presentation times, e.g. a variable frame rate.
    """
    path = Path(path)
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"write_video: {codec!r} is not a video codec")
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 90000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(img[: h - h % 2, : w - w % 2]), format="rgb24"
            )
            t = times[i] if times is not None else i / fps
            vf.pts = int(round(t * 90000))
            vf.time_base = stream.time_base
            for pkt in stream.encode(vf):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


SHM_PREFIX = "avemo_frames"  # /dev/shm names: avemo_frames_<parent pid>_<n>
_ring_ids = itertools.count()


@dataclass
class SlotChunk:
    """A chunk whose pixels lie in slot ``slot`` of ring ``ring``: only this crosses the queue."""

    ring: int
    slot: int
    index: np.ndarray
    times: np.ndarray
    shape: tuple[int, int, int, int]


class FrameRing:
    """Shared-memory slots one decode worker writes frames into, in order (slot 0, 1, .., 0, ..).

    Sending a 1280x720 frame through a ``multiprocessing`` queue costs ~2.3 ms on each side
    (pickle, pipe, unpickle); through a slot the worker converts straight into shared memory and
    the parent copies it out once. The parent creates and unlinks the segments (``close``, also
    at interpreter exit); the worker inherits them by fork. ``free`` counts the slots the parent
    has copied out; the parent reads chunks in the order they were written, so the worker's next
    slot is free whenever it acquires one.
    """

    def __init__(self, ctx: Any, slots: int = RING_SLOTS, slot_bytes: int = 32 << 20) -> None:
        self.id = next(_ring_ids)
        self.slot_bytes = int(slot_bytes)
        self.shm: list[shared_memory.SharedMemory] = []
        try:
            for i in range(slots):
                name = f"{SHM_PREFIX}_{os.getpid()}_{self.id}_{i}"
                self.shm.append(
                    shared_memory.SharedMemory(name=name, create=True, size=self.slot_bytes)
                )
        except BaseException:
            self.close()
            raise
        self.free = ctx.Semaphore(slots)
        self.next = 0  # worker side: the slot written next
        self._final = weakref.finalize(self, _unlink, list(self.shm))

    def view(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.ndarray(shape, np.uint8, buffer=self.shm[slot].buf)

    def take(self, ch: SlotChunk) -> FrameChunk:
        """Parent side: the chunk's frames copied out of shared memory; the slot is free again."""
        frames = self.view(ch.slot, ch.shape).copy()
        self.free.release()
        return FrameChunk(ch.index, ch.times, frames)

    def close(self) -> None:
        """Unlink the segments (parent side; idempotent)."""
        if hasattr(self, "_final"):
            self._final()
        else:
            _unlink(self.shm)


def _unlink(segments: list[shared_memory.SharedMemory]) -> None:
    for m in segments:
        try:
            m.close()
        except BufferError:  # a view still exported: the name goes anyway
            pass
        try:
            m.unlink()
        except FileNotFoundError:
            pass


def _orphaned(ppid: int) -> bool:
    return os.getppid() != ppid


def _wait(fn: Any, ppid: int, *args: Any) -> Any:
    """``fn(*args, timeout=1)`` until it succeeds; the worker exits if its parent is gone (no
    process left blocked forever on a queue or slot of a killed parent)."""
    while True:
        try:
            out = fn(*args, timeout=1.0)
        except (queue.Empty, queue.Full):
            out = False
        else:
            if out is not False:
                return out
        if _orphaned(ppid):
            os._exit(1)


def _shm_chunks(
    path: str,
    fps: float | None,
    stats: DecodeStats,
    ring: FrameRing,
    chunk: int,
    chunk_bytes: int,
    ppid: int,
    threads: bool = True,
    height: int | None = None,
) -> Iterator[SlotChunk | FrameChunk]:
    """As ``iter_frames``, each frame converted straight into the ring's next slot (same chunk
    boundaries, same pixels); a frame larger than a slot travels pickled."""
    slot = -1
    view: np.ndarray | None = None
    ts: list[float] = []
    n0 = n = 0
    t_clock = time.perf_counter()

    def flush(filled: np.ndarray) -> SlotChunk:  # filled: the chunk's view, frames [0, n)
        nonlocal slot, view, ts, n0, n, t_clock
        out = SlotChunk(
            ring.id,
            slot,
            np.arange(n0, n0 + n, dtype=np.int64),
            np.asarray(ts, np.float64),
            (n, *filled.shape[1:]),
        )
        stats.frames += n
        stats.seconds += time.perf_counter() - t_clock
        n0, n, ts, view, slot = n0 + n, 0, [], None, -1
        t_clock = time.perf_counter()
        return out

    for t, img in _frames(path, fps, stats, threads, height):
        if view is None:
            if img.nbytes > ring.slot_bytes:
                yield _chunk(n0, [t], [np.ascontiguousarray(img)], stats, t_clock)
                n0 += 1
                t_clock = time.perf_counter()
                continue
            cap = max(
                1,
                min(
                    chunk,
                    chunk_bytes // img.nbytes + (chunk_bytes % img.nbytes > 0),
                    ring.slot_bytes // img.nbytes,
                ),
            )
            _wait(ring.free.acquire, ppid)
            slot, ring.next = ring.next, (ring.next + 1) % len(ring.shm)
            view = ring.view(slot, (cap, *img.shape))
        if img.shape != view.shape[1:]:  # resolution change mid-stream: fit to the chunk's first
            img = _fit(img, view.shape[1], view.shape[2])
        view[n] = img
        ts.append(t)
        n += 1
        if n == len(view):
            yield flush(view)
    if view is not None:
        yield flush(view)


def decode_worker(
    tasks,
    events,
    chunk: int = CHUNK_FRAMES,
    chunk_bytes: int = CHUNK_BYTES,  # noqa: ANN001
    ring: FrameRing | None = None,
    threads: bool = True,
    height: int | None = None,
) -> None:
    """Worker-process loop: ``(key, path, fps)`` jobs in, ``start``/``chunk``/``end``/``error`` events out.

    Kept free of torch so a forked worker stays small; the events queue is bounded and the ring
    has few slots, so a slow consumer stops the decoders instead of filling memory. With a
    ``ring`` the pixels go through shared memory and only ``SlotChunk`` s through the queue.
    """
    ppid = os.getppid()
    while True:
        job = _wait(tasks.get, ppid)
        if job is None:
            return
        key, path, fps = job
        _wait(events.put, ppid, ("start", key, os.getpid()))
        stats = DecodeStats()
        try:
            if ring is not None:
                chunks = _shm_chunks(
                    path, fps, stats, ring, chunk, chunk_bytes, ppid, threads, height
                )
            else:
                chunks = iter_frames(
                    path,
                    fps=fps,
                    chunk=chunk,
                    stats=stats,
                    chunk_bytes=chunk_bytes,
                    threads=threads,
                )
            for ch in chunks:
                _wait(events.put, ppid, ("chunk", key, ch))
            _wait(events.put, ppid, ("end", key, stats))
        except Exception as e:  # noqa: BLE001 - reported as the clip's error status
            msg = str(e) if isinstance(e, DecodeError) else f"{path}: {type(e).__name__}: {e}"
            _wait(events.put, ppid, ("error", key, msg, stats))
