"""Runner hooks benchmark: ``streams_clips`` and ``store_compression`` measured on real footage.

``python -m avemo.bench --only runner``. Each row runs ``run_features`` (the CLI's path:
writer thread, shards, final file) on the RAVDESS actor-05 takes:

* ``face_fer2013`` in ``batch_clips`` calls of 8 clips (the decode workers drain at every
  boundary) versus one streaming call (``streams_clips = True``);
* ``face_crops`` (uint8 112x112x3 rows) stored contiguous (memory-mappable) versus gzip / lzf
  chunks: file size, write-side wall time, and the time to read every clip back.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from avemo.bench.detectors import ravdess_videos
from avemo.bench.table import write_section
from avemo.data.store import FeatureFile
from avemo.extract.registry import FEATURE_SETS, load_all
from avemo.extract.runner import run_features


def _run(
    videos: list[Path],
    name: str,
    out: Path,
    streams: bool | None = None,
    compression: str | None = None,
) -> dict[str, Any]:
    cls = FEATURE_SETS.get(name)
    saved = cls.__dict__.get("streams_clips", None)
    if streams is not None:
        cls.streams_clips = streams
    try:
        df = pd.DataFrame({"clip_id": [p.stem for p in videos], "video": [str(p) for p in videos]})
        t0 = time.perf_counter()
        path = run_features(
            df, [name], out, progress=False, compression=compression, batch_clips=8
        )[name]
        wall = time.perf_counter() - t0
    finally:
        if streams is not None:
            if saved is None:
                del cls.streams_clips
            else:
                cls.streams_clips = saved
    t0 = time.perf_counter()
    rows = 0
    with FeatureFile(path) as ff:
        for cid in ff.clip_ids:
            rows += len(ff.clip(cid).values)
    read = time.perf_counter() - t0
    return {
        "wall s": wall,
        "frames": rows,
        "frames/s": rows / wall,
        "file MB": path.stat().st_size / 2**20,
        "read all s": read,
    }


def main(quick: bool = False, device: str = "cpu") -> Path:
    load_all()
    videos = ravdess_videos()
    if not videos:
        raise SystemExit(
            "runner bench: ../shared/data/ravdess-a05/video not found (real footage needed)"
        )
    if quick:
        videos = videos[:10]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        runs: list[tuple[str, str, dict[str, Any]]] = [
            ("face_fer2013, batch_clips 8 (1)", "face_fer2013", {"streams": False}),
            ("face_fer2013, streams_clips (1)", "face_fer2013", {"streams": True}),
            ("face_fer2013, batch_clips 8 (2)", "face_fer2013", {"streams": False}),
            ("face_fer2013, streams_clips (2)", "face_fer2013", {"streams": True}),
            ("face_crops, contiguous", "face_crops", {"streams": True}),
            ("face_crops, gzip", "face_crops", {"streams": True, "compression": "gzip"}),
            ("face_crops, lzf", "face_crops", {"streams": True, "compression": "lzf"}),
        ]
        for label, name, kw in runs:
            r = _run(videos, name, Path(tmp) / label.replace(" ", "_").replace(",", ""), **kw)
            rows.append({"run": label, **r})
            print(rows[-1])
    notes = (
        f"{len(videos)} RAVDESS actor-05 takes (1280x720) through `run_features` (CLI path), "
        "default configs. batch_clips 8: the runner calls extract per 8 clips; streams_clips: one "
        "call, decode workers never drain (alternated twice: load drifts). Compression: the face_crops file (uint8 rows). `read "
        "all s`: every clip read back with FeatureFile. Shared 2-core machine: compare rows."
    )
    return write_section("Runner hooks: streams_clips, store_compression", rows, notes)
