"""Helpers for the workflow tests: a small generated corpus in the real HDF5 store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from avemo.data.store import ClipFeatures, make_provenance, write_clips

CLASSES = ["angry", "happy", "sad"]


def make_corpus(root: Path, n_clips: int = 36, n_subjects: int = 6, dims: Mapping[str, int] | None = None,
                seed: int = 0, media: Path | None = None) -> Path:
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
            clips.append(ClipFeatures(cid, x.astype(np.float32), np.arange(t) / 10.0, np.ones(t, bool)))
        write_clips(feats / f"{m}.h5", clips, make_provenance(f"gen_{m}", {"dim": d}, rate_hz=10.0))
    splits = ["train", "train", "train", "val", "test"]
    df = pd.DataFrame({
        "clip_id": ids,
        "audio": [str(media) if media else "x.wav"] * n_clips,
        "split": [splits[i % len(splits)] for i in range(n_clips)],
        "subject": [f"s{i % n_subjects}" for i in range(n_clips)],
        "label": labels,
    })
    df.to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"
