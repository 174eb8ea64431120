"""EmoDB (``../shared/data/emodb-8spk``) as an avemo manifest for the audio tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def emodb_manifest(shared_data: Path, n: int | None = None) -> pd.DataFrame:
    """``n`` files spread evenly over the 411 (every speaker; all when ``n`` is None): clip_id,
    audio, label, subject (the speaker, the first two characters of the file name)."""
    labels = pd.read_csv(shared_data / "emodb-8spk" / "labels.csv", dtype=str)
    assert len(labels) == 411
    if n:
        labels = labels.iloc[np.linspace(0, len(labels) - 1, n).astype(int)]
    return pd.DataFrame(
        {
            "clip_id": labels["clip_id"].to_numpy(),
            "audio": [str(shared_data / "emodb-8spk" / f) for f in labels["file"]],
            "label": labels["emotion"].to_numpy(),
            "subject": labels["clip_id"].str[:2].to_numpy(),
        }
    )
