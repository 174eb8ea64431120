"""Map a feature sequence (rows with time stamps) onto another timeline, e.g. video frame times.

Used by stage two when a per-frame model mixes features of different rates (25 fps faces,
100 Hz MFCC, 12.5 Hz speech_embedding, VGGish per 0.96 s). numpy only; ``align_torch`` is the
same on torch tensors (GPU-resident batches). Stage two must not import ``extract``: this
module lives in ``data`` for that reason.

Methods (``values [T, ...]``, ``times [T]`` s, optional ``mask [T]``; only valid rows are used;
source times need not be sorted):

* ``nearest``: the valid row closest in time (ties -> the earlier row). Good for upsampling.
* ``linear``: linear interpolation between the two valid rows around the target; targets
  before the first / after the last valid row hold the edge value.
* ``mean``: mean of the valid rows with ``target - window/2 <= t < target + window/2``
  (half-open, edges with 1 ns slack, so back-to-back windows never count a row twice). ``window`` defaults to the
  median spacing of the targets. Good for downsampling; a window with no row is invalid.

Returns ``(out [M, ...], out_mask [M])``. A target is invalid (mask False, row zero) when there
is no valid source row at all, when ``mean`` finds none in its window, or when the nearest
valid row is farther than ``max_gap`` seconds (if given; use it to avoid bridging long gaps,
e.g. a face missing for two seconds). ``nearest`` keeps the dtype; the others return float.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METHODS = ("nearest", "linear", "mean")
_EPS = 1e-9  # window edges are compared with 1 ns slack, so 0.1 + 0.2 lands where it should


def frame_times(n_frames: int, fps: float, offset: float = 0.0) -> np.ndarray:
    """Time stamps (s) of ``n_frames`` video frames at ``fps`` (frame start = its time)."""
    return offset + np.arange(n_frames, dtype=np.float64) / fps


def default_window(target_times: Any) -> float:
    """Median spacing of the targets (inf for fewer than two targets)."""
    t = np.sort(np.asarray(target_times, np.float64))
    d = np.diff(t)
    d = d[d > 0]
    return float(np.median(d)) if len(d) else float("inf")


def _check(method: str, n_values: int, n_times: int, n_mask: int | None) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown timeline method {method!r}; known: {', '.join(METHODS)}")
    if n_values != n_times or (n_mask is not None and n_mask != n_times):
        raise ValueError(
            f"values ({n_values}), times ({n_times}) and mask ({n_mask}) differ in length"
        )


def align(
    values: Any,
    times: Any,
    target_times: Any,
    method: str = "nearest",
    mask: Any = None,
    window: float | None = None,
    max_gap: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``values`` (rows at ``times``) at ``target_times``; see the module doc."""
    values = np.asarray(values)
    times = np.asarray(times, np.float64)
    q = np.asarray(target_times, np.float64)
    _check(method, len(values), len(times), None if mask is None else len(mask))
    keep = np.ones(len(times), bool) if mask is None else np.asarray(mask, bool)
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(times[idx], kind="stable")]
    v, t = values[idx], times[idx]
    tail = values.shape[1:]
    out_dtype = values.dtype if method == "nearest" else np.result_type(values.dtype, np.float32)
    if len(t) == 0 or len(q) == 0:
        return np.zeros((len(q), *tail), out_dtype), np.zeros(len(q), bool)

    j = np.searchsorted(t, q, side="left")
    lo, hi = np.clip(j - 1, 0, len(t) - 1), np.clip(j, 0, len(t) - 1)
    d_lo, d_hi = np.abs(q - t[lo]), np.abs(t[hi] - q)
    near = np.where(d_hi < d_lo, hi, lo)
    valid = np.ones(len(q), bool)
    if max_gap is not None:
        valid &= np.minimum(d_lo, d_hi) <= max_gap

    if method == "nearest":
        out = v[near].copy()
    elif method == "linear":
        j = np.searchsorted(t, q, side="right")
        lo, hi = np.clip(j - 1, 0, len(t) - 1), np.clip(j, 0, len(t) - 1)
        span = t[hi] - t[lo]
        w = np.where(span > 0, (q - t[lo]) / np.where(span > 0, span, 1.0), 0.0).clip(0.0, 1.0)
        w = w.reshape(-1, *([1] * len(tail)))
        out = (v[lo] * (1.0 - w) + v[hi] * w).astype(out_dtype)
    else:
        half = (default_window(q) if window is None else float(window)) / 2
        csum = np.concatenate([np.zeros((1, *tail)), np.cumsum(v, axis=0, dtype=np.float64)])
        a = np.searchsorted(t, q - half - _EPS, side="left")
        b = np.searchsorted(t, q + half - _EPS, side="left")
        count = (b - a).reshape(-1, *([1] * len(tail)))
        out = ((csum[b] - csum[a]) / np.maximum(count, 1)).astype(out_dtype)
        valid &= b > a
    out[~valid] = 0
    return out, valid


def align_torch(
    values: Any,
    times: Any,
    target_times: Any,
    method: str = "nearest",
    mask: Any = None,
    window: float | None = None,
    max_gap: float | None = None,
) -> tuple[Any, Any]:
    """``align`` on torch tensors (same semantics, stays on the tensors' device)."""
    import torch

    values = torch.as_tensor(values)
    dev = values.device
    times = torch.as_tensor(times, dtype=torch.float64, device=dev)
    q = torch.as_tensor(target_times, dtype=torch.float64, device=dev)
    _check(method, len(values), len(times), None if mask is None else len(mask))
    keep = (
        torch.ones(len(times), dtype=torch.bool, device=dev)
        if mask is None
        else torch.as_tensor(mask, dtype=torch.bool, device=dev)
    )
    idx = torch.nonzero(keep).flatten()
    idx = idx[torch.argsort(times[idx], stable=True)]
    v, t = values[idx], times[idx].contiguous()
    tail = tuple(values.shape[1:])
    out_dtype = values.dtype if method == "nearest" or values.is_floating_point() else torch.float32
    if len(t) == 0 or len(q) == 0:
        return (
            torch.zeros((len(q), *tail), dtype=out_dtype, device=dev),
            torch.zeros(len(q), dtype=torch.bool, device=dev),
        )
    n = len(t)
    j = torch.searchsorted(t, q, side="left")
    lo, hi = (j - 1).clamp(0, n - 1), j.clamp(0, n - 1)
    d_lo, d_hi = (q - t[lo]).abs(), (t[hi] - q).abs()
    near = torch.where(d_hi < d_lo, hi, lo)
    valid = torch.ones(len(q), dtype=torch.bool, device=dev)
    if max_gap is not None:
        valid &= torch.minimum(d_lo, d_hi) <= max_gap
    shape = (-1, *([1] * len(tail)))
    if method == "nearest":
        out = v[near].clone()
    elif method == "linear":
        j = torch.searchsorted(t, q, side="right")
        lo, hi = (j - 1).clamp(0, n - 1), j.clamp(0, n - 1)
        span = t[hi] - t[lo]
        w = torch.where(span > 0, (q - t[lo]) / torch.where(span > 0, span, 1.0), 0.0)
        w = w.clamp(0.0, 1.0).reshape(shape)
        vf = v.to(torch.float64)
        out = (vf[lo] * (1.0 - w) + vf[hi] * w).to(out_dtype)
    else:
        half = (default_window(q.cpu().numpy()) if window is None else float(window)) / 2
        csum = torch.cat(
            [
                torch.zeros((1, *tail), dtype=torch.float64, device=dev),
                torch.cumsum(v.to(torch.float64), dim=0),
            ]
        )
        a = torch.searchsorted(t, q - half - _EPS, side="left")
        b = torch.searchsorted(t, q + half - _EPS, side="left")
        count = (b - a).reshape(shape)
        out = ((csum[b] - csum[a]) / count.clamp(min=1)).to(out_dtype)
        valid &= b > a
    out[~valid] = 0
    return out, valid
