"""The repository root on ``sys.path`` (``experiments/`` is not installed), and a tiny real-store
speech corpus for the EmoDB experiments' tests: synthetic frame-level streams, speakers, folds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def tiny_corpus(
    tmp: Path, speakers: int = 4, clips: int = 9, nan_speaker: str | None = None, seed: int = 0
) -> tuple[pd.DataFrame, Path]:
    """``speakers`` x ``clips`` clips of 3 classes (``x y z``: the class shifts every stream's
    mean; each speaker adds its own offset), 2 streams ``a`` / ``b`` written with the real store
    under ``tmp/features``; folds: speakers split in two halves. ``nan_speaker``: that speaker's
    rows are NaN (any read of them poisons a score)."""
    from _fusion_data import write_set

    from avemo.data.store import ClipFeatures

    rng = np.random.default_rng(seed)
    rows, streams = [], {m: [] for m in ("a", "b")}
    for s in range(speakers):
        offset = rng.normal(0, 2)
        for i in range(clips):
            y = i % 3
            cid = f"s{s}_{i}"
            subject = f"0{s}"
            rows.append(
                {
                    "clip_id": cid,
                    "subject": subject,
                    "label": "xyz"[y],
                    "fold": s * 2 // speakers,
                    "split": "train",
                    "audio": f"{cid}.wav",
                }
            )
            for m in streams:
                v = rng.normal(size=(6, 4)) + 2.0 * y + offset
                if subject == nan_speaker:
                    v[:] = np.nan
                streams[m].append(
                    ClipFeatures(cid, v.astype(np.float32), np.arange(6) / 10, np.ones(6, bool))
                )
    feats = tmp / "features"
    feats.mkdir(parents=True, exist_ok=True)
    for m, c in streams.items():
        write_set(feats / f"{m}.h5", m, c, 10.0, dim=4)
    return pd.DataFrame(rows), feats
