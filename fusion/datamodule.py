"""Cached features -> device-resident arrays -> batches by index gather (no per-sample loading).

Every feature file a config names is read ONCE into a flat ``values [N_rows, *row_shape]``
tensor on the training device (``load_features``; shareable across runs through a
``feature_cache`` dict). A run then only builds small index tables:

* clip tasks: per modality, the row range of each clip;
* frame tasks: one label timeline per clip (from its annotation file); each modality is mapped
  onto it with ``avemo.data.timeline`` — ``nearest`` (default) aligns row NUMBERS, so the
  shared device arrays are gathered through an index table; ``linear`` / ``mean`` resample
  the values into a per-run copy — and the timeline is cut into windows (default 300 frames, hop 200, last window aligned to the
  end, short clips padded).

A batch is ``values[index_table[start + arange(T)]]`` plus a mask, normalised on the fly with
training-split statistics, all on the device. Evaluation of frame tasks averages the
predictions of overlapping windows per frame (``assemble``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from avemo.data.manifest import load_manifest
from avemo.data.store import FeatureFile
from avemo.data.timeline import METHODS as TIMELINE_METHODS
from avemo.data.timeline import align as align_rows
from avemo.fusion.config import ConfigError
from avemo.fusion.splits import make_splits

log = logging.getLogger(__name__)
_STATS_CHUNK = 1 << 18  # rows per chunk when computing normalisation statistics


# ----------------------------------------------------------------------------- feature arrays


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


def load_features(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                  cache: dict | None = None, dtype: str = "float32") -> FeatureArrays:
    """Read a feature file once per (path, device, dtype); ``cache`` lets runs share the tensors.

    A cached entry is reused only while the file's mtime and size are unchanged.
    ``dtype="float16"`` halves device memory (Aff-Wild2 scale); batches are float32 anyway.
    """
    p = Path(path).resolve()
    device = str(torch.device(device))
    st = p.stat() if p.exists() else None
    key = (str(p), device) if dtype == "float32" else (str(p), device, dtype)
    if cache is not None and key in cache and st and cache[key].stamp == (st.st_mtime_ns, st.st_size):
        return cache[key]
    with FeatureFile(p) as ff:
        ra = ff.load_all()
        prov = dict(ff.provenance)
    if dtype not in ("float32", "float16"):
        raise ConfigError(f"data.dtype must be float32 or float16, got {dtype!r}")
    values = torch.from_numpy(np.ascontiguousarray(ra.values, dtype=np.dtype(dtype))).to(device)
    arr = FeatureArrays(
        path=p, device=device, provenance=prov, values=values,
        row_mask=torch.from_numpy(ra.mask.astype(bool)).to(device),
        offsets=ra.offsets.astype(np.int64), timestamps=ra.timestamps.astype(np.float64),
        clip_index={c: i for i, c in enumerate(ra.clip_ids)}, status=list(ra.status),
        message=list(ra.message), stamp=(st.st_mtime_ns, st.st_size) if st else (0, 0),
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
    from avemo.data.store import ConfigMismatchError, expectation_diffs

    diffs = expectation_diffs(arr.provenance, expect)
    if diffs:
        raise ConfigMismatchError(
            f"{arr.path} ({modality}) was made with another config; differing keys:\n  "
            + "\n  ".join(diffs))


# ----------------------------------------------------------------------------- windows


def window_starts(length: int, window: int, hop: int) -> list[int]:
    """Window starts covering ``length`` frames: hop apart, the last one aligned to the end.

    A clip not longer than one window gets a single window at 0 (padded when shorter).
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, hop))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def overlap_average(n_frames: int, starts: Sequence[int], preds: Sequence[np.ndarray]) -> np.ndarray:
    """Per-frame mean of overlapping window predictions (reference for ``assemble``)."""
    acc = np.zeros((n_frames, *np.shape(preds[0])[1:]), np.float64)
    cnt = np.zeros(n_frames)
    for s, p in zip(starts, preds, strict=True):
        n = min(len(p), n_frames - s)
        acc[s:s + n] += p[:n]
        cnt[s:s + n] += 1
    return acc / np.maximum(cnt, 1).reshape(-1, *([1] * (acc.ndim - 1)))


# ----------------------------------------------------------------------------- frame labels


def read_frame_labels(row: Mapping[str, Any] | str, targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(time [L], labels [L, n_targets])`` of a manifest row's annotation; NaN = unlabelled.

    Uses ``avemo.data.annotations.read_clip_annotation`` so Aff-Wild2 frame indices become
    seconds with the clip's own frame rate (``video`` / ``fps`` columns).
    """
    from avemo.data.annotations import read_annotation, read_clip_annotation

    df = read_annotation(row) if isinstance(row, str) else read_clip_annotation(row)
    missing = [k for k in ("time", *targets) if k not in df.columns]
    if missing:
        where = row if isinstance(row, str) else row.get("annotation")
        raise ConfigError(f"annotation {where} has no column(s) {missing}; data.targets={list(targets)}")
    return df["time"].to_numpy(np.float64), df[list(targets)].to_numpy(np.float64)


# ----------------------------------------------------------------------------- datamodule


@dataclass
class _Tables:
    """Index tables of one run (partition-independent)."""

    clip_ids: list[str]
    idx: dict[str, Tensor]  # modality -> [R_m] flat row index into values
    ok: dict[str, Tensor]  # modality -> [R_m] row usable (inside clip, timeline match)
    start: dict[str, Tensor] = field(default_factory=dict)  # clip task: [N] per modality
    length: dict[str, Tensor] = field(default_factory=dict)
    y: Tensor | None = None  # clip: [N] long; frame: [R, n_t] float (NaN unlabelled)
    # frame tasks
    lab_clip: np.ndarray | None = None  # [R] clip position of each label row
    lab_time: np.ndarray | None = None
    lab_off: np.ndarray | None = None  # [N + 1]
    win_clip: np.ndarray | None = None  # [S] clip position of each window
    win_start: Tensor | None = None  # [S] label-row start
    win_len: Tensor | None = None  # [S]


class CachedFeatureDataModule(L.LightningDataModule):
    """LightningDataModule over cached feature sets; everything lives on ``device``.

    Use ``gather`` / ``batches`` directly (ablation grids) or through Lightning's
    ``train_dataloader`` / ``val_dataloader`` (they return ``DeviceBatches`` iterables).
    """

    def __init__(self, cfg: Mapping[str, Any], device: str | torch.device = "cpu",
                 feature_cache: dict | None = None, manifest: pd.DataFrame | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.data_cfg = cfg["data"]
        self.device = torch.device(device)
        self.feature_cache = feature_cache
        self._manifest = manifest
        self.task_type: str = cfg["task"]["type"]
        self.modalities: list[str] = list(self.data_cfg["features"])
        self.notes: list[str] = []
        self._ready = False
        self.seed = int(cfg.get("seed") or 0)
        self.epoch = 0

    # ------------------------------------------------------------------ setup

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        d = self.data_cfg
        df = self._manifest if self._manifest is not None else load_manifest(
            d["manifest"], classes=d.get("classes"), check_files=False)
        self.arrays = {m: load_features(d["features"][m], self.device, self.feature_cache,
                                        d.get("dtype") or "float32") for m in self.modalities}
        for m in self.modalities:
            check_expectation(self.arrays[m], (d.get("expect") or {}).get(m), m)
        df = self._labelled(df)
        df = self._present(df)
        df = self._status_filter(df)
        if df.empty:
            raise ConfigError("no clips left to train on (see the notes above: "
                              + "; ".join(self.notes) + ")")
        self.manifest = df.reset_index(drop=True)
        self.splits = make_splits(self.manifest, self.cfg["split"], self.seed)
        parts = self.splits["partitions"]
        if not parts["val"]:
            self.notes.append("no validation or test clips: validating on the training clips")
            parts["val"] = list(parts["train"])
        self.pos = {c: i for i, c in enumerate(self.manifest["clip_id"].astype(str))}
        self.tables = self._build_clip_tables() if self.task_type == "clip" else self._build_frame_tables()
        self.part_seqs = {p: self._sequences(ids) for p, ids in parts.items()}
        self.stats = self._stats(parts["train"]) if d.get("normalize", True) else {}
        for n in self.notes:
            log.info(n)
        self._ready = True

    def _labelled(self, df: pd.DataFrame) -> pd.DataFrame:
        col = "label" if self.task_type == "clip" else "annotation"
        if col not in df.columns:
            raise ConfigError(f"task.type={self.task_type} needs a {col} column in the manifest")
        keep = df[col].notna()
        if (~keep).sum():
            self.notes.append(f"{int((~keep).sum())} manifest clips have no {col} and are not used")
        df = df[keep].copy()
        if self.task_type == "clip":
            classes = self.data_cfg.get("classes") or df.attrs.get("classes") or sorted(
                df["label"].unique().tolist())
            self.classes = [str(c) for c in classes]
            unknown = sorted(set(df["label"]) - set(self.classes))
            if unknown:
                raise ConfigError(f"labels {unknown} are not in data.classes {self.classes}")
            self.n_out = len(self.classes)
        else:
            self.targets = list(self.data_cfg.get("targets") or ["valence", "arousal"])
            self.n_out = len(self.targets)
        return df

    def _present(self, df: pd.DataFrame) -> pd.DataFrame:
        ids = df["clip_id"].astype(str)
        keep = pd.Series(True, index=df.index)
        for m in self.modalities:
            absent = ~ids.isin(self.arrays[m].clip_index.keys())
            if absent.any():
                miss = ids[absent].tolist()
                msg = (f"{len(miss)} manifest clip(s) are missing from {self.arrays[m].path} "
                       f"({m}): {miss[:10]}{' ...' if len(miss) > 10 else ''}")
                if self.data_cfg["missing_clips"] == "error":
                    raise ConfigError(msg + "\n(extract them with `avemo features`, or set "
                                      "data.missing_clips=skip to train without them)")
                self.notes.append(msg + " - skipped")
                keep &= ~absent
        return df[keep]

    def _status_filter(self, df: pd.DataFrame) -> pd.DataFrame:
        ids = df["clip_id"].astype(str).tolist()
        bad = np.zeros(len(ids), bool)
        counts: dict[str, int] = {}
        for m in self.modalities:
            a = self.arrays[m]
            st = np.array([a.status[a.clip_index[c]] for c in ids], dtype=object)
            for s in set(st) - {"ok"}:
                counts[f"{m}:{s}"] = int((st == s).sum())
            bad |= st != "ok"
        self.status_counts = counts
        if bad.any():
            what = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            if self.data_cfg["non_ok"] == "skip":
                self.notes.append(f"skipped {int(bad.sum())} clip(s) whose status is not ok ({what})")
                return df[~bad]
            self.notes.append(f"kept {int(bad.sum())} clip(s) whose status is not ok with their "
                              f"rows masked ({what})")
        return df

    def _max_rows_index(self, a: int, b: int) -> np.ndarray:
        cap = self.data_cfg.get("max_rows")
        if cap and b - a > int(cap):
            return np.round(np.linspace(a, b - 1, int(cap))).astype(np.int64)
        return np.arange(a, b, dtype=np.int64)

    def _build_clip_tables(self) -> _Tables:
        ids = self.manifest["clip_id"].astype(str).tolist()
        t = _Tables(clip_ids=ids, idx={}, ok={})
        for m in self.modalities:
            a = self.arrays[m]
            pieces = [self._max_rows_index(*a.rows_of(c)) for c in ids]
            lens = np.array([len(p) for p in pieces], np.int64)
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            flat = np.concatenate(pieces) if lens.sum() else np.zeros(1, np.int64)
            ok_rows = np.ones(len(flat), bool)
            if self.data_cfg["non_ok"] == "keep":  # a non-ok modality contributes nothing
                bad = np.array([a.status[a.clip_index[c]] != "ok" for c in ids])
                for i in np.flatnonzero(bad):
                    ok_rows[starts[i]:starts[i] + lens[i]] = False
            t.idx[m] = torch.from_numpy(flat).to(self.device)
            t.ok[m] = torch.from_numpy(ok_rows).to(self.device)
            t.start[m] = torch.from_numpy(starts).to(self.device)
            t.length[m] = torch.from_numpy(lens).to(self.device)
        cls = {c: i for i, c in enumerate(self.classes)}
        t.y = torch.tensor([cls[str(x)] for x in self.manifest["label"]], dtype=torch.long,
                           device=self.device)
        return t

    def _build_frame_tables(self) -> _Tables:
        ids = self.manifest["clip_id"].astype(str).tolist()
        t = _Tables(clip_ids=ids, idx={}, ok={})
        times, labels = [], []
        cache = self.feature_cache if self.feature_cache is not None else {}
        for row in self.manifest.to_dict("records"):
            key = ("annotation", str(row["annotation"]), str(row.get("video")), tuple(self.targets))
            if key not in cache:
                cache[key] = read_frame_labels(row, self.targets)
            tt, yy = cache[key]
            times.append(tt)
            labels.append(yy)
        lens = np.array([len(x) for x in times], np.int64)
        t.lab_off = np.concatenate([[0], np.cumsum(lens)])
        t.lab_time = np.concatenate(times)
        t.lab_clip = np.repeat(np.arange(len(ids)), lens)
        t.y = torch.from_numpy(np.concatenate(labels).astype(np.float32)).to(self.device)
        tl = dict(self.data_cfg.get("timeline") or {})
        method = tl.get("method", "nearest")
        if method not in TIMELINE_METHODS:
            raise ConfigError(f"data.timeline.method must be one of {list(TIMELINE_METHODS)}, got {method!r}")
        self.aligned: dict[str, Tensor] = {}
        for m in self.modalities:
            a = self.arrays[m]
            idx = np.zeros(len(t.lab_time), np.int64)
            ok = np.zeros(len(t.lab_time), bool)
            dense = [] if method != "nearest" else None
            row_mask = a.row_mask.cpu().numpy() if method == "nearest" else None
            for i, c in enumerate(ids):
                lo, hi = a.rows_of(c)
                sl = slice(t.lab_off[i], t.lab_off[i + 1])
                gap = tl.get("max_gap")
                if gap is None and hi - lo > 1:  # default: do not bridge more than ~1.5 rows
                    gap = 1.5 * float(np.median(np.diff(np.sort(a.timestamps[lo:hi]))))
                usable = a.status[a.clip_index[c]] == "ok" or self.data_cfg["non_ok"] != "keep"
                if method == "nearest":  # align row numbers: the device arrays stay shared
                    r, good = align_rows(np.arange(lo, hi), a.timestamps[lo:hi], times[i], "nearest",
                                         mask=row_mask[lo:hi], max_gap=gap)
                    idx[sl] = np.where(good, r, lo if hi > lo else 0)
                else:  # linear / mean: this run's own resampled copy on the label timeline
                    vals = a.values[lo:hi].cpu().numpy()
                    v, good = align_rows(vals, a.timestamps[lo:hi], times[i], method,
                                         mask=a.row_mask[lo:hi].cpu().numpy(),
                                         window=tl.get("window"), max_gap=gap)
                    dense.append(v.astype(np.float32))
                    idx[sl] = np.arange(sl.start, sl.stop)
                ok[sl] = good & usable
            if dense is not None:
                self.aligned[m] = torch.from_numpy(np.concatenate(dense)).to(self.device)
            t.idx[m] = torch.from_numpy(idx).to(self.device)
            t.ok[m] = torch.from_numpy(ok).to(self.device)
        W, hop = int(self.data_cfg["window"]["length"]), int(self.data_cfg["window"]["hop"])
        wc, ws, wl = [], [], []
        for i, n in enumerate(lens):
            for s in window_starts(int(n), W, hop):
                wc.append(i)
                ws.append(int(t.lab_off[i]) + s)
                wl.append(min(W, int(n) - s))
        t.win_clip = np.array(wc, np.int64)
        t.win_start = torch.tensor(ws, dtype=torch.long, device=self.device)
        t.win_len = torch.tensor(wl, dtype=torch.long, device=self.device)
        self.window = W
        return t

    def add_partition(self, name: str, clip_ids: Sequence[str]) -> None:
        """Register extra clips (e.g. a held-out test set for fold merging) as partition ``name``,
        predicted with the same normalisation, windows and batching as the run's own partitions."""
        missing = [c for c in clip_ids if c not in self.pos]
        if missing:
            raise KeyError(f"clips not in this datamodule: {missing[:10]}")
        self.part_seqs[name] = self._sequences(clip_ids)

    def _sequences(self, clip_ids: Sequence[str]) -> Tensor:
        """Sequence ids (clip positions, or window ids for frame tasks) of a partition."""
        pos = np.array([self.pos[c] for c in clip_ids], np.int64)
        if self.task_type == "clip":
            return torch.from_numpy(np.sort(pos)).to(self.device)
        return torch.from_numpy(np.flatnonzero(np.isin(self.tables.win_clip, pos))).to(self.device)

    def _stats(self, train_ids: Sequence[str]) -> dict[str, tuple[Tensor, Tensor]]:
        """Per-element ``(mean, 1/std)`` over valid rows of training clips only (float64 sums)."""
        out = {}
        for m in self.modalities:
            a = self.arrays[m]
            sel = np.zeros(a.values.shape[0], bool)
            for c in train_ids:
                lo, hi = a.rows_of(c)
                if a.status[a.clip_index[c]] == "ok" or self.data_cfg["non_ok"] != "keep":
                    sel[lo:hi] = True
            w_all = torch.from_numpy(sel).to(self.device) & a.row_mask
            s1 = torch.zeros(a.row_shape, dtype=torch.float64, device=self.device)
            s2 = torch.zeros_like(s1)
            n = 0.0
            for lo in range(0, a.values.shape[0], _STATS_CHUNK):
                w = w_all[lo:lo + _STATS_CHUNK]
                if not bool(w.any()):
                    continue
                x = a.values[lo:lo + _STATS_CHUNK][w].double()
                s1 += x.sum(0)
                s2 += (x * x).sum(0)
                n += x.shape[0]
            if n == 0:
                self.notes.append(f"{m}: no valid training rows; features left unnormalised")
                continue
            mean = s1 / n
            var = (s2 / n - mean * mean).clamp_min(0)
            std = var.sqrt()
            std = torch.where(std > 1e-6, std, torch.ones_like(std))
            out[m] = (mean.float(), (1.0 / std).float())  # (mean, 1 / std)
        return out

    # ------------------------------------------------------------------ batches

    @property
    def inputs(self) -> dict[str, tuple[int, ...]]:
        """``{modality: row_shape}`` for ``MODELS.build(inputs=...)``."""
        return {m: self.arrays[m].row_shape for m in self.modalities}

    @property
    def task(self) -> dict[str, Any]:
        return {"type": self.task_type, "n_out": self.n_out}

    def gather(self, seq: Tensor, dropout: float = 0.0, missing: Sequence[str] = (),
               generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Batch of sequences ``seq`` built on the device: padded values, masks, labels."""
        t = self.tables
        batch: dict[str, Tensor] = {"index": seq}
        if self.task_type == "frame":
            ar = torch.arange(self.window, device=self.device)
            valid_t = ar[None] < t.win_len[seq][:, None]
            pos_lab = torch.where(valid_t, t.win_start[seq][:, None] + ar[None], 0)
        for m in self.modalities:
            a = self.arrays[m]
            if self.task_type == "clip":
                lens = t.length[m][seq]
                T = max(int(lens.max()), 1) if len(seq) else 1
                ar = torch.arange(T, device=self.device)
                valid = ar[None] < lens[:, None]
                pos = torch.where(valid, t.start[m][seq][:, None] + ar[None], 0)
            else:
                valid, pos = valid_t, pos_lab
            rows = t.idx[m][pos]
            mask = valid & t.ok[m][pos]
            if m not in getattr(self, "aligned", {}):
                mask &= a.row_mask[rows]
            # one index_select copy, then in-place normalisation (memory-bound: few passes)
            src = self.aligned.get(m, a.values) if self.task_type == "frame" else a.values
            x = src.index_select(0, rows.reshape(-1)).view(*rows.shape, *a.row_shape).float()
            if m in self.stats:
                mean, inv_std = self.stats[m]
                torch.addcmul(-mean * inv_std, x, inv_std, out=x)  # (x - mean) / std, one pass
            if m in missing:
                mask = torch.zeros_like(mask)
            batch[m] = x
            batch[f"{m}_mask"] = mask
        if dropout > 0 and len(self.modalities) > 1:
            drop = torch.rand(len(seq), generator=generator, device="cpu") < dropout
            which = torch.randint(len(self.modalities), (len(seq),), generator=generator, device="cpu")
            for i, m in enumerate(self.modalities):
                gone = (drop & (which == i)).to(self.device)
                batch[f"{m}_mask"] = batch[f"{m}_mask"] & ~gone[:, None]
        for m in self.modalities:  # masked rows are zero (models must not rely on it)
            mk = batch[f"{m}_mask"]
            batch[m].masked_fill_(~mk.reshape(*mk.shape, *([1] * (batch[m].dim() - 2))), 0.0)
        if self.task_type == "clip":
            batch["y"] = t.y[seq]
        else:
            y = t.y[pos_lab]
            y_mask = valid_t[..., None] & ~torch.isnan(y)
            batch["y"] = torch.nan_to_num(y)
            batch["y_mask"] = y_mask
        return batch

    def batches(self, partition: str, batch_size: int | None = None, shuffle: bool = False,
                dropout: float = 0.0, missing: Sequence[str] = ()) -> DeviceBatches:
        bs = int(batch_size or (self.data_cfg["batch_size"] if partition == "train"
                                else self.data_cfg.get("eval_batch_size") or 256))
        return DeviceBatches(self, self.part_seqs[partition], bs, shuffle, dropout, missing)

    def train_dataloader(self) -> DeviceBatches:
        return self.batches("train", shuffle=True,
                            dropout=float(self.data_cfg.get("modality_dropout") or 0.0))

    def val_dataloader(self) -> DeviceBatches:
        return self.batches("val")

    def test_dataloader(self) -> DeviceBatches:
        return self.batches("test")

    # ------------------------------------------------------------------ evaluation

    def assemble(self, seq: Tensor, out: Tensor) -> dict[str, Any]:
        """Turn per-sequence outputs into per-clip scores or per-frame predictions.

        Clip task: ``{"clip_ids", "scores" [N, C], "y" [N]}``. Frame task: overlapping
        window predictions are averaged per label frame; returns ``{"clip_ids" (per frame),
        "time", "pred" [F, n_t], "y" [F, n_t] (NaN unlabelled)}`` for every covered frame.
        """
        t = self.tables
        if self.task_type == "clip":
            pos = seq.cpu().numpy()
            return {"clip_ids": [t.clip_ids[i] for i in pos], "scores": out.detach().float(),
                    "y": t.y[seq]}
        R = len(t.lab_time)
        ar = torch.arange(out.shape[1], device=out.device)
        valid = ar[None] < t.win_len[seq][:, None].to(out.device)
        pos = (t.win_start[seq][:, None].to(out.device) + ar[None])[valid]
        acc = torch.zeros(R, out.shape[-1], dtype=torch.float64, device=out.device)
        cnt = torch.zeros(R, dtype=torch.float64, device=out.device)
        acc.index_add_(0, pos, out[valid].double())
        cnt.index_add_(0, pos, torch.ones_like(pos, dtype=torch.float64))
        covered = (cnt > 0).cpu().numpy()
        pred = (acc / cnt.clamp_min(1)[:, None])[torch.from_numpy(covered).to(out.device)]
        return {
            "clip_ids": [t.clip_ids[i] for i in t.lab_clip[covered]],
            "clip_pos": t.lab_clip[covered],
            "time": t.lab_time[covered],
            "pred": pred.float(),
            "y": t.y[torch.from_numpy(covered).to(t.y.device)].to(out.device),
        }


class DeviceBatches:
    """Iterable of device batches for one partition; a fresh seeded order every epoch."""

    def __init__(self, dm: CachedFeatureDataModule, seqs: Tensor, batch_size: int, shuffle: bool,
                 dropout: float = 0.0, missing: Sequence[str] = ()) -> None:
        self.dm, self.seqs, self.batch_size = dm, seqs, max(1, batch_size)
        self.shuffle, self.dropout, self.missing = shuffle, dropout, tuple(missing)
        self._epoch = 0

    def __len__(self) -> int:
        return (len(self.seqs) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        g = torch.Generator().manual_seed(self.dm.seed * 100003 + self._epoch)
        self._epoch += 1
        order = self.seqs
        if self.shuffle:
            order = self.seqs[torch.randperm(len(self.seqs), generator=g).to(self.seqs.device)]
        for i in range(0, len(order), self.batch_size):
            yield self.dm.gather(order[i:i + self.batch_size], self.dropout, self.missing, g)
