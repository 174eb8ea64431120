"""The window grid shared by the windowed feature sets (video ``face_r2plus1d``, audio
``logmel_resnet18``): one row per window END frame, every ``hop`` frames and at the last
frame, each window covering the ``window`` frames up to its end. Both modalities stamp rows
with the end frame's time, so stage two pairs an audio and a video window by time alone.
"""

from __future__ import annotations

import numpy as np


def window_ends(n: int, hop: int) -> np.ndarray:
    """End frames of the windows of an ``n``-frame clip: every ``hop``-th frame and the last one."""
    if n <= 0:
        return np.zeros(0, np.int64)
    ends = np.arange(hop - 1, n, hop, dtype=np.int64)
    return ends if len(ends) and ends[-1] == n - 1 else np.append(ends, n - 1)
