"""Frames from the decode workers through shared memory: same pixels and features as the pickled
queue, and no /dev/shm segment left behind by a finished, interrupted or killed run."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avemo.extract.base import ClipInput
from avemo.extract.registry import FEATURE_SETS, load_all
from avemo.extract.video.decode import (
    SHM_PREFIX,
    DecodeStats,
    FrameRing,
    SlotChunk,
    _shm_chunks,
    iter_frames,
    write_video,
)
from avemo.extract.video.pipeline import DecodePool

pytestmark = pytest.mark.skipif(
    not Path("/dev/shm").is_dir() or "fork" not in mp.get_all_start_methods(),
    reason="shared-memory transport needs fork and /dev/shm",
)


def _segments(pid: int | None = None) -> list[str]:
    prefix = f"{SHM_PREFIX}_{pid}_" if pid is not None else f"{SHM_PREFIX}_"
    return sorted(p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(prefix))


def _pool_frames(path, fps=None, shm=True) -> tuple[np.ndarray, np.ndarray]:
    pool = DecodePool(1, shm=shm)
    try:
        chunks = [
            ev[2] for ev in pool.run([(0, str(path), fps)]) if ev is not None and ev[0] == "chunk"
        ]
    finally:
        pool.close()
    return np.concatenate([c.times for c in chunks]), np.concatenate([c.frames for c in chunks])


def test_shared_memory_features_equal_the_pickled_path_on_real_ravdess(shared_data):
    clip = sorted((shared_data / "ravdess-a05" / "video").glob("*.mp4"))[0]
    ref = np.concatenate([c.frames for c in iter_frames(clip)])
    times, frames = _pool_frames(clip)
    assert frames.shape == ref.shape and frames.shape[1:] == (720, 1280, 3)
    assert np.array_equal(frames, ref)  # bit-identical pixels
    load_all()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for shm in (True, False):
            fs = FEATURE_SETS.build("face_fer2013", {}, "cpu")
            fs.workers = 1
            fs.pipeline().shm = shm
            (out[shm],) = list(fs.extract([ClipInput("c", str(clip))]))
            fs.close()
    finally:
        torch.set_num_threads(n)
    a, b = out[True], out[False]
    assert a.status == b.status == "ok" and a.mask.all()
    assert np.array_equal(a.timestamps, b.timestamps) and np.array_equal(a.timestamps, times)
    assert np.array_equal(a.mask, b.mask)
    # the CNN's batches follow the decoder's timing (either path), which may move a float's last bits
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-5)
    assert _segments(os.getpid()) == []


def test_rotated_sampled_and_oversized_frames_match_iter_frames(tmp_path, media):
    """Rotation (strided views), fps sampling, chunk boundaries, and frames larger than a slot
    (sent pickled) give exactly ``iter_frames``' chunks."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 80, 3), np.uint8) for _ in range(23)]
    path = write_video(tmp_path / "rot.mp4", frames, fps=10, rotation=90)
    for src, fps, slot_bytes in (
        (path, None, 1 << 20),
        (path, 4.0, 1 << 20),
        (media("single_face.mp4"), 5.0, 1 << 20),
        (path, None, 5000),
    ):  # 5000 bytes < one 80x48 frame: pickled fallback
        ref = list(iter_frames(src, fps=fps, chunk=4, chunk_bytes=3 * 48 * 80 * 3))
        ring = FrameRing(mp.get_context("fork"), slots=2, slot_bytes=slot_bytes)
        try:
            got = []
            for ch in _shm_chunks(
                str(src), fps, DecodeStats(), ring, 4, 3 * 48 * 80 * 3, os.getppid()
            ):
                got.append(ring.take(ch) if isinstance(ch, SlotChunk) else ch)
        finally:
            ring.close()
        assert [len(c) for c in got] == [len(c) for c in ref if len(c)] or slot_bytes == 5000
        assert np.array_equal(
            np.concatenate([c.index for c in got]), np.concatenate([c.index for c in ref])
        )
        assert np.array_equal(
            np.concatenate([c.times for c in got]), np.concatenate([c.times for c in ref])
        )
        assert np.array_equal(
            np.concatenate([c.frames for c in got]), np.concatenate([c.frames for c in ref])
        )
        if src == path:
            assert got[0].frames.shape[1:] == (
                80,
                48,
                3,
            )  # upright: 90 deg display rotation applied
    assert _segments(os.getpid()) == []


def test_worker_death_and_close_leave_no_segments(tmp_path, media):
    pool = DecodePool(1)
    list(pool.run([(0, str(media("single_face.mp4")), 5.0)]))
    assert len(_segments(os.getpid())) == 4  # one ring of 4 slots while the pool lives
    pool.workers[0].proc.kill()
    pool.workers[0].proc.join()
    clip = str(media("single_face.mp4"))
    ends = {
        ev[1]: ev
        for ev in pool.run([(1, clip, 5.0), (2, clip, 5.0)])
        if ev is not None and ev[0] != "chunk"
    }
    assert "decoder process died" in ends[1][2]  # the clip handed to the dead worker
    assert (
        ends[2][0] == "end" and len(pool.rings) == 2
    )  # the next one: a fresh worker, a fresh ring
    pool.close()
    assert _segments(os.getpid()) == []


# The child restores Python's Ctrl-C handler: a shell without job control starts background
# commands with SIGINT ignored, Python then installs no handler, and the child (not the code
# under test) would ignore the signal -- how this test failed under `nohup make test &`.
CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from avemo.extract.base import ClipInput
from avemo.extract.registry import FEATURE_SETS, load_all
load_all()
fs = FEATURE_SETS.build("face_crops", {"crop_size": 32}, "cpu")
fs.workers = 1
clips = [ClipInput(f"c{i}", sys.argv[1]) for i in range(40)]
for r in fs.extract(clips):
    print("READY", flush=True)
    time.sleep(60)  # interrupted or killed here, workers blocked on full slots
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_or_killed_run_leaves_no_segments_or_workers(media, sig):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(media("single_face.mp4"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "READY"
        assert len(_segments(proc.pid)) == 4
        children = [
            int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        ]
        proc.send_signal(sig)
        proc.wait(timeout=120)
        # a killed parent's workers notice within ~1 s, then the tracker unlinks; the bound only
        # stops a hung run (a loaded 2-core machine can stall a process for seconds)
        deadline = time.monotonic() + 120
        while (
            _segments(proc.pid)
            or any(
                Path(f"/proc/{c}").exists()
                and "zombie" not in Path(f"/proc/{c}/status").read_text()
                for c in children
            )
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _segments(proc.pid) == []
        alive = [
            c
            for c in children
            if Path(f"/proc/{c}").exists() and "zombie" not in Path(f"/proc/{c}/status").read_text()
        ]
        assert alive == []
        if sig == signal.SIGINT:
            assert "KeyboardInterrupt" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
