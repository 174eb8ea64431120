"""Frame transport benchmark: the default face pipeline with frames pickled through the queue
(the earlier path) vs written into shared memory, beside decode-only, on RAVDESS 720p.

``python -m avemo.bench --only transport``. The variants run round-robin, best of
``repeats`` (the shared machine's load drifts), decode-only before and after; every variant must
give the same rows (checked: the transport moves pixels, it must not change them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avemo.bench.detectors import ravdess_videos
from avemo.bench.faces import decode_only
from avemo.bench.table import write_section
from avemo.extract.base import ClipInput
from avemo.extract.registry import FEATURE_SETS, load_all

# (label, pipeline attributes, BlazeFace frames per onnxruntime call)
VARIANTS: list[tuple[str, dict[str, Any], int]] = [
    (
        "frames pickled through the queue, BlazeFace batch 32 (before)",
        {"shm": False, "decode_threads": True},
        32,
    ),
    (
        "frames in shared memory, FFmpeg threads in the worker",
        {"shm": True, "decode_threads": True},
        4,
    ),
    (
        "shared memory, single-threaded FFmpeg in the worker (default)",
        {"shm": True, "decode_threads": False},
        4,
    ),
    (
        "shared memory, frames converted at 360p (experiment: other rows)",
        {"shm": True, "decode_threads": False, "decode_height": 360},
        4,
    ),
]


def run(
    videos: Sequence[Path], attrs: dict[str, Any], batch: int, device: str = "cpu"
) -> tuple[dict[str, Any], dict]:
    """One pass of the default ``face_fer2013`` over ``videos`` with pipeline ``attrs`` set."""
    fs = FEATURE_SETS.build("face_fer2013", {}, device)
    pipe = fs.pipeline()  # models built before the clock starts
    for k, v in attrs.items():
        setattr(pipe, k, v)
    det = pipe.detector
    getattr(det, "primary", det).batch = batch
    out = {}
    t0 = time.perf_counter()
    for res in fs.extract([ClipInput(p.stem, str(p)) for p in videos]):
        out[res.clip_id] = res
    wall = time.perf_counter() - t0
    fs.close()
    t = pipe.times
    total = sum(len(r.mask) for r in out.values())
    have = sum(int(r.mask.sum()) for r in out.values())
    return (
        {
            "frames/s": total / wall,
            "frames": total,
            "frames with the subject %": 100.0 * have / max(total, 1),
            "wall s": wall,
            "wait s": t.wait,
            "decode s": t.decode,
            "detect s": t.detect,
            "align s": t.align,
            "CNN s": t.embed,
        },
        out,
    )


def main(quick: bool = False, device: str = "cpu", repeats: int = 2) -> Path:
    load_all()
    videos = ravdess_videos()
    if not videos:
        raise SystemExit(
            "transport bench: ../shared/data/ravdess-a05/video not found (real footage needed)"
        )
    if quick:
        videos, repeats = videos[:4], 1
    best: dict[str, dict[str, Any]] = {}
    ratios: dict[str, list[float]] = {}
    dec_best = 0.0
    ref: dict | None = None
    diff = (
        0.0  # largest |row difference| to the first run (CNN batches follow the decoders' timing)
    )
    load = os.getloadavg()[0]
    for _ in range(repeats):  # each variant's run right after its own decode-only run: one load
        for label, attrs, batch in VARIANTS:
            n_dec, t_dec = decode_only(list(videos), repeats=1)
            dec_fps = n_dec / t_dec
            dec_best = max(dec_best, dec_fps)
            print(f"decode only {dec_fps:.1f} frames/s")
            row, out = run(videos, attrs, batch, device)
            print(label, {k: round(v, 2) for k, v in row.items()})
            ratios.setdefault(label, []).append(100.0 * row["frames/s"] / dec_fps)
            if label not in best or row["frames/s"] > best[label]["frames/s"]:
                best[label] = row
            if ref is None:
                ref = out
            if attrs.get("decode_height"):
                continue  # other pixels, other rows: only its speed and subject share are compared
            if any(not np.array_equal(out[k].mask, ref[k].mask) for k in ref):
                raise SystemExit(f"transport bench: {label} changed the masks")
            diff = max(diff, max(float(np.abs(out[k].values - ref[k].values).max()) for k in ref))
    rows: list[dict[str, Any]] = [
        {
            "run": f"decode only (PyAV -> RGB), best of {repeats}",
            "frames/s": dec_best,
            "% of decode-only, per round": "100",
            "frames": n_dec,
        }
    ]
    for label, _, _ in VARIANTS:
        r = ratios[label]
        rows.append(
            {
                "run": label,
                "frames/s": best[label]["frames/s"],
                "% of decode-only, per round": " / ".join(f"{v:.0f}" for v in r),
                "% median": float(np.median(r)),
                **{k: v for k, v in best[label].items() if k != "frames/s"},
            }
        )
    notes = (
        f"{len(videos)} RAVDESS actor-05 takes (1280x720, 29.97 fps), face_fer2013 defaults "
        "(blazeface_mtcnn, detect_every 5), 1 decode worker + the main process on the 2-core CPU. "
        "BlazeFace batch: key frames per onnxruntime call (1 intra-op thread). "
        f"Variants round-robin, {repeats} rounds, each run right after its own decode-only run (one "
        "process, FFmpeg threads); `% of decode-only, per round` divides the run's frames/s by that "
        "decode-only run's (other jobs on a machine move decode-only by up to 2x within minutes: "
        "only paired ratios mean something); frames/s and stage "
        "seconds: the best run. Every run at full resolution gave the same masks; rows differ "
        f"from the first run's by at most {diff:.1e} (the CNN's batches follow the decoders' timing, "
        "in every variant). The 360p row is an experiment, not an option: crops cut from 640x360 "
        "frames are other pixels (zero-shot accuracy not measured). "
        "Stage seconds: `decode` is summed in the worker, `wait` is the main process idle on it. "
        f"Load average when the run started: {load:.1f} on {os.cpu_count()} cores. Reproduce: "
        "`python -m avemo.bench --only transport`."
    )
    return write_section("Faces: frame transport (RAVDESS 720p)", rows, notes)
