"""Helpers for the workflow tests: a small generated corpus in the real HDF5 store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from avemo.data.store import ClipFeatures, make_provenance, write_clips

CLASSES = ["angry", "happy", "sad"]


def make_corpus(
    root: Path,
    n_clips: int = 36,
    n_subjects: int = 6,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    media: Path | None = None,
) -> Path:
    """Manifest + one feature file per modality; the class shows in both modalities' means."""
    dims = dict(dims or {"face": 8, "audio": 6})
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    feats = root / "features"
    feats.mkdir(exist_ok=True)
    labels = [CLASSES[i % len(CLASSES)] for i in range(n_clips)]
    ids = [f"clip{i:03d}" for i in range(n_clips)]
    centres = {m: rng.normal(0, 1, (len(CLASSES), d)) for m, d in dims.items()}
    for m, d in dims.items():
        clips = []
        for cid, lab in zip(ids, labels, strict=True):
            t = int(rng.integers(5, 12))
            x = centres[m][CLASSES.index(lab)] + rng.normal(0, 1.2, (t, d))
            clips.append(
                ClipFeatures(cid, x.astype(np.float32), np.arange(t) / 10.0, np.ones(t, bool))
            )
        write_clips(feats / f"{m}.h5", clips, make_provenance(f"gen_{m}", {"dim": d}, rate_hz=10.0))
    splits = ["train", "train", "train", "val", "test"]
    df = pd.DataFrame(
        {
            "clip_id": ids,
            "audio": [str(media) if media else "x.wav"] * n_clips,
            "split": [splits[i % len(splits)] for i in range(n_clips)],
            "subject": [f"s{i % n_subjects}" for i in range(n_clips)],
            "label": labels,
        }
    )
    df.to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def make_frame_corpus(
    root: Path, n_clips: int = 12, n_test: int = 4, frames: int = 40, seed: int = 0
) -> Path:
    """Per-frame valence/arousal corpus: face + audio rows at 10 Hz, annotations time,valence,arousal;
    the last ``n_test`` clips are the official test partition (kept out of the CV pool)."""
    rng = np.random.default_rng(seed)
    (root / "features").mkdir(parents=True, exist_ok=True)
    (root / "ann").mkdir(exist_ok=True)
    ids = [f"vid{i:02d}" for i in range(n_clips)]
    face, audio, rows = [], [], []
    for i, cid in enumerate(ids):
        t = np.arange(frames) / 10.0
        f = rng.normal(0, 1, (frames, 6)).astype(np.float32)
        a = rng.normal(0, 1, (frames, 4)).astype(np.float32)
        val = np.tanh(0.6 * f[:, 0] + 0.3 * a[:, 0])
        aro = np.tanh(0.5 * f[:, 1] - 0.4 * a[:, 1])
        pd.DataFrame({"time": t, "valence": val, "arousal": aro}).to_csv(
            root / "ann" / f"{cid}.csv", index=False
        )
        face.append(ClipFeatures(cid, f, t, np.ones(frames, bool)))
        audio.append(ClipFeatures(cid, a, t, np.ones(frames, bool)))
        rows.append(
            {
                "clip_id": cid,
                "video": f"{cid}.mp4",
                "split": "test" if i >= n_clips - n_test else "train",
                "subject": f"s{i}",
                "annotation": str(root / "ann" / f"{cid}.csv"),
            }
        )
    write_clips(
        root / "features" / "face.h5", face, make_provenance("gen_face", {"dim": 6}, rate_hz=10.0)
    )
    write_clips(
        root / "features" / "audio.h5",
        audio,
        make_provenance("gen_audio", {"dim": 4}, rate_hz=10.0),
    )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"
