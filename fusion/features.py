"""The part of stage two shared across runs: feature files loaded once onto the device.

Every feature file a config names is read ONCE into a flat ``values [N_rows, *row_shape]``
tensor on the training device (``load_features``; shared across runs through a
``feature_cache`` dict keyed by path, device and dtype). ``FeatureFiles`` holds a config's
modalities, checks their provenance (``data.expect``), filters the manifest to the clips the
files hold with a usable status, and computes normalisation statistics over training rows.
Nothing here depends on the task.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from avemo.data.store import (
    MISSING_MODALITY,
    ConfigMismatchError,
    FeatureFile,
    MissingFeatureFileError,
    expectation_diffs,
)
from avemo.fusion.config import ConfigError, DataConfig

_STATS_CHUNK = 1 << 18  # rows per chunk when computing normalisation statistics


@dataclass
class FeatureArrays:
    """One feature file, fully loaded: flat rows on ``device``, per-clip bookkeeping on CPU."""

    path: Path
    device: str
    provenance: dict[str, Any]
    values: Tensor  # [N_rows, *row_shape] float32, on device
    row_mask: Tensor  # [N_rows] bool, on device
    offsets: np.ndarray  # [N_clips + 1]
    timestamps: np.ndarray  # [N_rows] seconds
    clip_index: dict[str, int]
    status: list[str]
    message: list[str]
    stamp: tuple[int, int] = (0, 0)  # (mtime_ns, size) of the file when loaded

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:])

    def rows_of(self, clip_id: str) -> tuple[int, int]:
        i = self.clip_index[clip_id]
        return int(self.offsets[i]), int(self.offsets[i + 1])

    def status_of(self, clip_id: str) -> str:
        return self.status[self.clip_index[clip_id]]


def load_features(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    cache: dict | None = None,
    dtype: str = "float32",
) -> FeatureArrays:
    """Read a feature file once per (path, device, dtype); ``cache`` lets runs share the tensors.

    A cached entry is reused only while the file's mtime and size are unchanged.
    ``dtype="float16"`` halves device memory (Aff-Wild2 scale); batches are float32 anyway.
    """
    p = Path(path).resolve()
    device = str(torch.device(device))
    st = p.stat() if p.exists() else None
    key = (str(p), device) if dtype == "float32" else (str(p), device, dtype)
    if (
        cache is not None
        and key in cache
        and st
        and cache[key].stamp == (st.st_mtime_ns, st.st_size)
    ):
        return cache[key]
    if dtype not in ("float32", "float16"):
        raise ConfigError(f"data.dtype must be float32 or float16, got {dtype!r}")
    with FeatureFile(p) as ff:
        ra = ff.load_all()
        prov = dict(ff.provenance)
    values = torch.from_numpy(np.ascontiguousarray(ra.values, dtype=np.dtype(dtype))).to(device)
    arr = FeatureArrays(
        path=p,
        device=device,
        provenance=prov,
        values=values,
        row_mask=torch.from_numpy(ra.mask.astype(bool)).to(device),
        offsets=ra.offsets.astype(np.int64),
        timestamps=ra.timestamps.astype(np.float64),
        clip_index={c: i for i, c in enumerate(ra.clip_ids)},
        status=list(ra.status),
        message=list(ra.message),
        stamp=(st.st_mtime_ns, st.st_size) if st else (0, 0),
    )
    if cache is not None:
        cache[key] = arr
    return arr


def check_expectation(arr: FeatureArrays, expect: Mapping[str, Any] | None, modality: str) -> None:
    """Refuse a file whose provenance differs from what the config expects.

    ``expect`` may give provenance keys (``feature_set``, ``config`` — a partial config checks
    only the keys it names — ``weights``) and/or ``config_hash``.
    """
    if not expect:
        return

    diffs = expectation_diffs(arr.provenance, expect)
    if diffs:
        raise ConfigMismatchError(
            f"{arr.path} ({modality}) was made with another config; differing keys:\n  "
            + "\n  ".join(diffs)
        )


class FeatureFiles:
    """The feature files of one config (``data.features``: modality -> file written by stage
    one), loaded and provenance-checked. Not stage one's ``extract.base.FeatureSet`` (the
    extractor plugin that writes such a file).

    ``keep_non_ok``: clips whose status is not ok stay (their rows masked) instead of being
    skipped (``data.non_ok``).
    """

    def __init__(
        self,
        data: DataConfig,
        device: str | torch.device = "cpu",
        cache: dict | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.modalities: list[str] = list(data.features)
        self.keep_non_ok = data.non_ok == "keep"
        self.missing_clips = data.missing_clips
        self.arrays = {}
        for m, p in data.features.items():
            path = Path(str(p))
            try:
                self.arrays[m] = load_features(str(path), self.device, cache, data.dtype)
            except MissingFeatureFileError:  # name the stream, the set that makes it, the way out
                raise ConfigError(
                    f"data.features.{m}: feature file {path} does not exist; build it with "
                    f"`avemo features -s {path.stem}` into {path.parent}, or drop the "
                    f"stream with data.features.{m}=null"
                ) from None
        for m in self.modalities:
            check_expectation(self.arrays[m], data.expect.get(m), m)
        self.status_counts: dict[str, int] = {}

    @property
    def inputs(self) -> dict[str, tuple[int, ...]]:
        """``{modality: row_shape}`` for ``MODELS.build(inputs=...)``."""
        return {m: self.arrays[m].row_shape for m in self.modalities}

    def usable(self, modality: str, clip_id: str) -> bool:
        """Whether the clip's rows of ``modality`` may be used (its status there is ok)."""
        return self.arrays[modality].status_of(clip_id) == "ok"

    def provenance(self) -> dict[str, Any]:
        return {
            m: {"path": str(a.path), "provenance": a.provenance} for m, a in self.arrays.items()
        }

    def present(self, df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
        """Manifest rows whose clip is in every feature file (``data.missing_clips``)."""
        ids = df["clip_id"].astype(str)
        keep = pd.Series(True, index=df.index)
        for m in self.modalities:
            absent = ~ids.isin(self.arrays[m].clip_index.keys())
            if absent.any():
                miss = ids[absent].tolist()
                msg = (
                    f"{len(miss)} manifest clip(s) are missing from {self.arrays[m].path} "
                    f"({m}): {miss[:10]}{' ...' if len(miss) > 10 else ''}"
                )
                if self.missing_clips == "error":
                    raise ConfigError(
                        msg + "\n(extract them with `avemo features`, or set "
                        "data.missing_clips=skip to train without them)"
                    )
                notes.append(msg + " - skipped")
                keep &= ~absent
        return df[keep]

    def status_filter(self, df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
        """Drop (or, with ``non_ok: keep``, note) clips whose status is not ok in some file.

        A missing modality (``no_video`` / ``no_audio``: the clip has no such media) is not a
        fault: the clip stays with that modality's rows masked, as long as some modality of it
        is present; a clip with none is dropped.
        """
        ids = df["clip_id"].astype(str).tolist()
        bad = np.zeros(len(ids), bool)
        absent = np.zeros(len(ids), int)
        counts: dict[str, int] = {}
        missing: dict[str, int] = {}
        for m in self.modalities:
            a = self.arrays[m]
            st = np.array([a.status_of(c) for c in ids], dtype=object)
            gone = np.isin(st, MISSING_MODALITY)
            for s in set(st) - {"ok"}:
                (missing if s in MISSING_MODALITY else counts)[f"{m}:{s}"] = int((st == s).sum())
            bad |= (st != "ok") & ~gone
            absent += gone
        empty = absent == len(self.modalities)  # no modality at all: nothing to learn from
        self.status_counts = {**counts, **missing}
        if missing:
            what = ", ".join(f"{k}={v}" for k, v in sorted(missing.items()))
            n_kept = int(((absent > 0) & ~empty & ~bad).sum())
            notes.append(
                f"{int((absent > 0).sum())} clip(s) lack a modality ({what}): {n_kept} kept "
                f"with that modality masked, {int(empty.sum())} with no modality skipped"
            )
        if bad.any():
            what = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            if not self.keep_non_ok:
                notes.append(f"skipped {int(bad.sum())} clip(s) whose status is not ok ({what})")
                return df[~bad & ~empty]
            notes.append(
                f"kept {int(bad.sum())} clip(s) whose status is not ok with their "
                f"rows masked ({what})"
            )
        return df[~empty]

    def stats(self, train_ids: Sequence[str], notes: list[str]) -> dict[str, tuple[Tensor, Tensor]]:
        """Per-element ``(mean, 1/std)`` over valid rows of training clips only (float64 sums)."""
        out = {}
        for m in self.modalities:
            a = self.arrays[m]
            sel = np.zeros(a.values.shape[0], bool)
            for c in train_ids:
                lo, hi = a.rows_of(c)
                if self.usable(m, c):
                    sel[lo:hi] = True
            w_all = torch.from_numpy(sel).to(self.device) & a.row_mask
            s1 = torch.zeros(a.row_shape, dtype=torch.float64, device=self.device)
            s2 = torch.zeros_like(s1)
            n = 0.0
            for lo in range(0, a.values.shape[0], _STATS_CHUNK):
                w = w_all[lo : lo + _STATS_CHUNK]
                if not bool(w.any()):
                    continue
                x = a.values[lo : lo + _STATS_CHUNK][w].double()
                s1 += x.sum(0)
                s2 += (x * x).sum(0)
                n += x.shape[0]
            if n == 0:
                notes.append(f"{m}: no valid training rows; features left unnormalised")
                continue
            mean = s1 / n
            var = (s2 / n - mean * mean).clamp_min(0)
            std = var.sqrt()
            std = torch.where(std > 1e-6, std, torch.ones_like(std))
            out[m] = (mean.float(), (1.0 / std).float())  # (mean, 1 / std)
        return out


STATS_FILE = "normalisation.npz"


def save_stats(stats: Mapping[str, tuple[Tensor, Tensor]], path: str | os.PathLike[str]) -> Path:
    """Write ``{modality: (mean, 1/std)}`` beside a run, so ``avemo predict`` needs no
    training data to normalise new clips the way training did."""
    arrays = {}
    for m, (mean, inv_std) in stats.items():
        arrays[f"{m}/mean"] = mean.detach().cpu().numpy()
        arrays[f"{m}/inv_std"] = inv_std.detach().cpu().numpy()
    p = Path(path)
    with open(p, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)  # numeric only, as load_stats reads it
    return p


def load_stats(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> dict[str, tuple[Tensor, Tensor]]:
    """The statistics ``save_stats`` wrote, on ``device`` (plain arrays: no pickle)."""
    out: dict[str, list[Tensor]] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            m, what = key.rsplit("/", 1)
            out.setdefault(m, [torch.empty(0), torch.empty(0)])[what == "inv_std"] = (
                torch.from_numpy(z[key]).float().to(device)
            )
    return {m: (v[0], v[1]) for m, v in out.items()}
