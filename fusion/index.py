"""The index of samples of one run: which feature rows make each training sequence.

Two layouts, chosen by the task:

* ``ClipIndex`` -- one sequence per clip: per modality, the row range of each clip in the
  shared feature arrays (``data.max_rows`` subsamples long clips uniformly).
* ``WindowIndex`` -- one label timeline per clip (from the task's labels); each modality is
  mapped onto it with ``avemo.data.timeline`` (``nearest``, the default, aligns row NUMBERS so
  the shared device arrays are gathered through an index table; ``linear`` / ``mean`` resample
  the values into a per-run copy), and the timeline is cut into windows (default 300 frames,
  hop 200, the last window aligned to the end, short clips padded).

Both answer the same questions for the datamodule's gather: ``positions(seq)`` (rows of every
modality, as positions in ``idx`` / ``ok``), ``source(m, arrays)``, ``labels(seq)``, and
``assemble(seq, out)`` (per-clip outputs, or per-frame averages of overlapping windows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avemo.data.timeline import align as align_rows
from avemo.fusion.config import DataConfig
from avemo.fusion.features import FeatureArrays, FeatureFiles


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


def overlap_average(
    n_frames: int, starts: Sequence[int], preds: Sequence[np.ndarray]
) -> np.ndarray:
    """Per-frame mean of overlapping window predictions (reference for ``WindowIndex.assemble``)."""
    acc = np.zeros((n_frames, *np.shape(preds[0])[1:]), np.float64)
    cnt = np.zeros(n_frames)
    for s, p in zip(starts, preds, strict=True):
        n = min(len(p), n_frames - s)
        acc[s : s + n] += p[:n]
        cnt[s : s + n] += 1
    return acc / np.maximum(cnt, 1).reshape(-1, *([1] * (acc.ndim - 1)))


@dataclass
class ClipIndex:
    """One sequence per clip; ``y`` [N] (class index) or [N, K] (clip-level targets)."""

    clip_ids: list[str]
    idx: dict[str, Tensor]  # modality -> [R_m] flat row index into values
    ok: dict[str, Tensor]  # modality -> [R_m] row usable
    start: dict[str, Tensor]  # modality -> [N] first position of each clip in idx
    length: dict[str, Tensor]  # modality -> [N]
    y: Tensor
    aligned: dict[str, Tensor] = field(default_factory=dict)  # never: rows are the files' own

    def sequences(self, pos: np.ndarray) -> Tensor:
        return torch.from_numpy(np.sort(pos)).to(self.y.device)

    def positions(self, seq: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        out = {}
        for m, lens_all in self.length.items():
            lens = lens_all[seq]
            T = max(int(lens.max()), 1) if len(seq) else 1
            ar = torch.arange(T, device=seq.device)
            valid = ar[None] < lens[:, None]
            out[m] = (torch.where(valid, self.start[m][seq][:, None] + ar[None], 0), valid)
        return out

    def source(self, m: str, a: FeatureArrays) -> Tensor:
        return a.values

    def labels(self, seq: Tensor) -> dict[str, Tensor]:
        return {"y": self.y[seq]}

    def assemble(self, seq: Tensor, out: Tensor) -> dict[str, Any]:
        pos = seq.cpu().numpy()
        return {
            "clip_ids": [self.clip_ids[i] for i in pos],
            "clip_pos": pos,
            "out": out.detach().float(),
            "y": self.y[seq],
        }


def build_clip_index(
    ids: Sequence[str], features: FeatureFiles, y: Tensor, max_rows: int | None = None
) -> ClipIndex:
    """Row ranges of each clip in each modality (``max_rows``: uniform subsample of longer clips)."""
    dev = features.device
    t = ClipIndex(clip_ids=list(ids), idx={}, ok={}, start={}, length={}, y=y.to(dev))
    for m in features.modalities:
        a = features.arrays[m]
        pieces = []
        for c in ids:
            lo, hi = a.rows_of(c)
            if max_rows and hi - lo > int(max_rows):
                pieces.append(np.round(np.linspace(lo, hi - 1, int(max_rows))).astype(np.int64))
            else:
                pieces.append(np.arange(lo, hi, dtype=np.int64))
        lens = np.array([len(p) for p in pieces], np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        flat = np.concatenate(pieces) if lens.sum() else np.zeros(1, np.int64)
        ok_rows = np.ones(len(flat), bool)
        for i, c in enumerate(
            ids
        ):  # a non-ok modality kept with `non_ok: keep` contributes nothing
            if not features.usable(m, c):
                ok_rows[starts[i] : starts[i] + lens[i]] = False
        t.idx[m] = torch.from_numpy(flat).to(dev)
        t.ok[m] = torch.from_numpy(ok_rows).to(dev)
        t.start[m] = torch.from_numpy(starts).to(dev)
        t.length[m] = torch.from_numpy(lens).to(dev)
    return t


@dataclass
class WindowIndex:
    """Windows over per-clip label timelines; ``y`` [R, K] per label row (NaN = unlabelled)."""

    clip_ids: list[str]
    idx: dict[str, Tensor]  # modality -> [R] row index (into values, or into ``aligned``)
    ok: dict[str, Tensor]  # modality -> [R] row usable (inside clip, timeline match)
    y: Tensor
    lab_clip: np.ndarray  # [R] clip position of each label row
    lab_time: np.ndarray  # [R] seconds
    lab_off: np.ndarray  # [N + 1]
    win_clip: np.ndarray  # [S] clip position of each window
    win_start: Tensor  # [S] label-row start
    win_len: Tensor  # [S]
    window: int
    aligned: dict[str, Tensor] = field(default_factory=dict)  # linear/mean: per-run resampled rows

    def sequences(self, pos: np.ndarray) -> Tensor:
        return torch.from_numpy(np.flatnonzero(np.isin(self.win_clip, pos))).to(self.y.device)

    def _frames(self, seq: Tensor) -> tuple[Tensor, Tensor]:
        ar = torch.arange(self.window, device=seq.device)
        valid = ar[None] < self.win_len[seq][:, None]
        return torch.where(valid, self.win_start[seq][:, None] + ar[None], 0), valid

    def positions(self, seq: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        pos, valid = self._frames(seq)
        return {m: (pos, valid) for m in self.idx}

    def source(self, m: str, a: FeatureArrays) -> Tensor:
        return self.aligned.get(m, a.values)

    def labels(self, seq: Tensor) -> dict[str, Tensor]:
        pos, valid = self._frames(seq)
        y = self.y[pos]
        return {"y": torch.nan_to_num(y), "y_mask": valid[..., None] & ~torch.isnan(y)}

    def assemble(self, seq: Tensor, out: Tensor) -> dict[str, Any]:
        """Overlapping window outputs averaged per label frame, for every covered frame."""
        R = len(self.lab_time)
        ar = torch.arange(out.shape[1], device=out.device)
        valid = ar[None] < self.win_len[seq][:, None].to(out.device)
        pos = (self.win_start[seq][:, None].to(out.device) + ar[None])[valid]
        acc = torch.zeros(R, out.shape[-1], dtype=torch.float64, device=out.device)
        cnt = torch.zeros(R, dtype=torch.float64, device=out.device)
        acc.index_add_(0, pos, out[valid].double())
        cnt.index_add_(0, pos, torch.ones_like(pos, dtype=torch.float64))
        covered = (cnt > 0).cpu().numpy()
        pred = (acc / cnt.clamp_min(1)[:, None])[torch.from_numpy(covered).to(out.device)]
        return {
            "clip_ids": [self.clip_ids[i] for i in self.lab_clip[covered]],
            "clip_pos": self.lab_clip[covered],
            "time": self.lab_time[covered],
            "out": pred.float(),
            "y": self.y[torch.from_numpy(covered).to(self.y.device)].to(out.device),
        }


def frame_presence(
    index: WindowIndex, arrays: Mapping[str, FeatureArrays], modalities: Sequence[str]
) -> Any:
    """Per label frame (``clip_id``, ``time``, ``<m>_present``): whether each modality had a
    usable row aligned to it (a pandas DataFrame)."""
    import pandas as pd

    out = {}
    for m in modalities:
        ok = index.ok[m].clone()
        if m not in index.aligned:
            ok &= arrays[m].row_mask[index.idx[m]]
        out[f"{m}_present"] = ok.cpu().numpy()
    df = pd.DataFrame(out)
    df.insert(0, "clip_id", [index.clip_ids[i] for i in index.lab_clip])
    df.insert(1, "time", index.lab_time)
    return df


def build_window_index(
    ids: Sequence[str],
    times: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    features: FeatureFiles,
    data: DataConfig,
) -> WindowIndex:
    """Align every modality onto the label timelines ``times`` and cut them into windows."""
    dev = features.device
    lens = np.array([len(x) for x in times], np.int64)
    lab_off = np.concatenate([[0], np.cumsum(lens)])
    lab_time = np.concatenate(times)
    idx_t: dict[str, Tensor] = {}
    ok_t: dict[str, Tensor] = {}
    aligned: dict[str, Tensor] = {}
    tl = data.timeline
    method = tl.method
    for m in features.modalities:
        a = features.arrays[m]
        idx = np.zeros(len(lab_time), np.int64)
        ok = np.zeros(len(lab_time), bool)
        dense: list[np.ndarray] = []  # linear / mean: the resampled rows, clip after clip
        row_mask = a.row_mask.cpu().numpy()
        for i, c in enumerate(ids):
            lo, hi = a.rows_of(c)
            sl = slice(lab_off[i], lab_off[i + 1])
            gap = tl.max_gap
            if gap is None and hi - lo > 1:  # default: do not bridge more than ~1.5 rows
                gap = 1.5 * float(np.median(np.diff(np.sort(a.timestamps[lo:hi]))))
            if method == "nearest":  # align row numbers: the device arrays stay shared
                r, good = align_rows(
                    np.arange(lo, hi),
                    a.timestamps[lo:hi],
                    times[i],
                    "nearest",
                    mask=row_mask[lo:hi],
                    max_gap=gap,
                )
                idx[sl] = np.where(good, r, lo if hi > lo else 0)
            else:  # linear / mean: this run's own resampled copy on the label timeline
                vals = a.values[lo:hi].cpu().numpy()
                v, good = align_rows(
                    vals,
                    a.timestamps[lo:hi],
                    times[i],
                    method,
                    mask=row_mask[lo:hi],
                    window=tl.window,
                    max_gap=gap,
                )
                dense.append(v.astype(np.float32))
                idx[sl] = np.arange(sl.start, sl.stop)
            ok[sl] = good & features.usable(m, c)
        if method != "nearest":
            aligned[m] = torch.from_numpy(np.concatenate(dense)).to(dev)
        idx_t[m] = torch.from_numpy(idx).to(dev)
        ok_t[m] = torch.from_numpy(ok).to(dev)
    W, hop = data.window.length, data.window.hop
    wc, ws, wl = [], [], []
    for i, n in enumerate(lens):
        for s in window_starts(int(n), W, hop):
            wc.append(i)
            ws.append(int(lab_off[i]) + s)
            wl.append(min(W, int(n) - s))
    return WindowIndex(
        clip_ids=list(ids),
        idx=idx_t,
        ok=ok_t,
        y=torch.from_numpy(np.concatenate(labels).astype(np.float32)).to(dev),
        lab_clip=np.repeat(np.arange(len(ids)), lens),
        lab_time=lab_time,
        lab_off=lab_off,
        win_clip=np.array(wc, np.int64),
        win_start=torch.tensor(ws, dtype=torch.long, device=dev),
        win_len=torch.tensor(wl, dtype=torch.long, device=dev),
        window=W,
        aligned=aligned,
    )
