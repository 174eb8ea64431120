"""Fallback used until ``avemo.data.timeline`` exists.

Kept tiny on purpose: nearest-row mapping only.
"""

from __future__ import annotations

import numpy as np


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
