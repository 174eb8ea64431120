"""Helpers shared by the torch audio CNNs (VGGish, PANNs): loading state dicts, windowing."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np


def load_state_dict(path: str | os.PathLike[str], drop_prefixes: Iterable[str] = ()) -> dict:
    """A tensor-only state dict from ``path`` (``weights_only=True``), unwrapping
    ``{"model": ...}`` / ``{"state_dict": ...}`` checkpoints and dropping given key prefixes."""
    import torch

    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    drop = tuple(drop_prefixes)
    return {
        k.removeprefix("module."): v
        for k, v in obj.items()
        if not (drop and k.removeprefix("module.").startswith(drop))
    }


def load_into(module, state: dict, what: str, path: str | os.PathLike[str]) -> None:
    """``load_state_dict(strict=True)`` with a message naming the file and the mismatch."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit the {what} architecture: {e}") from None


def window_starts(n_items: int, win: int, hop: float, pad_short: bool) -> np.ndarray:
    """Start indices of windows of ``win`` items every ``hop`` items (rounded), fully inside
    ``n_items``; one window at 0 when the signal is shorter than ``win`` and ``pad_short``."""
    if n_items < win:
        return np.zeros(1 if pad_short and n_items > 0 else 0, np.int64)
    count = int(np.floor((n_items - win) / hop + 1e-9)) + 1
    starts = np.round(np.arange(count) * hop).astype(np.int64)
    return starts[starts + win <= n_items]
