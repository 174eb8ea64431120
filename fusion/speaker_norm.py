"""Per-speaker feature normalisation (``data.speaker_norm: true``): speaker-independent emotion
recognition's standard remedy for voices that differ more between speakers than between emotions.

Every column of a feature stream is z-normalised per speaker with the mean and standard deviation
of that speaker's OWN valid rows (all of the speaker's clips the run uses, training and test
alike). It uses no labels and no other speaker's data, so it is transductive per speaker: at test
time it needs a batch of the test speaker's unlabelled clips (the manifest's ``subject`` column
says whose clip is whose), not a single clip. Clip-level features (one row per clip, e.g.
functionals) are thereby normalised over the speaker's clips; frame-level descriptors over the
speaker's frames. Normalisation with training statistics (``data.normalize``) still follows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from avemo.fusion.features import FeatureArrays

EPS = 1e-6


def normalise_groups(x: np.ndarray, valid: np.ndarray, group: np.ndarray) -> np.ndarray:
    """``x [N, D]`` with each column z-normalised within each group over the group's valid rows
    (``valid [N]`` bool, ``group [N]`` any labels; invalid rows are normalised with their
    group's statistics too). A column constant within the group (up to rounding noise) becomes
    exactly 0 there: left as noise, a later standardisation over speakers where it is constant
    would blow that noise up (seen on ComParE functionals); float64 sums."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for g in np.unique(group):
        rows = group == g
        ref = x[rows & valid]
        if len(ref) == 0:
            out[rows] = x[rows]
            continue
        mean = ref.mean(0)
        std = ref.std(0)
        keep = std > EPS * np.maximum(1.0, np.abs(mean))  # constant up to rounding noise -> 0
        out[rows] = np.where(keep, (x[rows] - mean) / np.where(keep, std, 1.0), 0.0)
    return out


def speaker_normalised(arr: FeatureArrays, clip_subject: Mapping[str, str],
                       clips: Sequence[str] | None = None) -> FeatureArrays:
    """A copy of ``arr`` whose rows of each speaker's clips are z-normalised per speaker
    (``clip_subject``: clip id -> speaker; only ``clips`` -- default: every clip the mapping
    names -- are used and changed). The input (possibly shared through the feature cache) is
    left untouched."""
    clips = list(clip_subject) if clips is None else list(clips)
    idx, grp = [], []
    for c in clips:
        lo, hi = arr.rows_of(c)
        idx.append(np.arange(lo, hi))
        grp += [str(clip_subject[c])] * (hi - lo)
    rows = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    flat = arr.values.reshape(arr.values.shape[0], -1)
    x = flat[torch.from_numpy(rows).to(flat.device)].double().cpu().numpy()
    valid = arr.row_mask.cpu().numpy()[rows]
    z = normalise_groups(x, valid, np.asarray(grp, dtype=object))
    values = arr.values.clone()
    vflat = values.view(values.shape[0], -1)
    vflat[torch.from_numpy(rows).to(values.device)] = torch.from_numpy(z).to(values.device, values.dtype)
    return dataclasses.replace(arr, values=values)
