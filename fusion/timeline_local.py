"""Fallbacks used until ``avemo.data.timeline`` / ``avemo.data.annotations`` exist.

Kept tiny on purpose: nearest-row mapping and a plain CSV annotation reader. The datamodule
prefers the shared helpers when they are importable.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def nearest_rows(row_times: np.ndarray, query_times: np.ndarray, tolerance: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Index of the row nearest each query time, and whether it lies within ``tolerance`` s.

    ``row_times`` must be sorted. With no rows every query is invalid (index 0).
    """
    q = np.asarray(query_times, np.float64)
    t = np.asarray(row_times, np.float64)
    if len(t) == 0:
        return np.zeros(len(q), np.int64), np.zeros(len(q), bool)
    right = np.clip(np.searchsorted(t, q), 0, len(t) - 1)
    left = np.clip(right - 1, 0, len(t) - 1)
    idx = np.where(np.abs(t[left] - q) <= np.abs(t[right] - q), left, right)
    if tolerance is None:
        tolerance = 1.5 * float(np.median(np.diff(t))) if len(t) > 1 else np.inf
    ok = np.abs(t[idx] - q) <= tolerance
    return idx.astype(np.int64), ok


def read_annotation_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """CSV/Parquet with columns time, valence, arousal (NaN = unlabelled)."""
    p = str(path)
    df = pd.read_parquet(p) if p.endswith(".parquet") else pd.read_csv(p)
    return df
