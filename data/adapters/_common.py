"""Helpers shared by the dataset adapters: file listing, root checks, subject splits, options.

Adapter options arrive from the CLI as strings (``--option folds=6``), so the small parsers
here accept both strings and native values.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from avemo.data.manifest import ManifestError

VIDEO_EXT = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".mpg", ".mpeg", ".m4v", ".wmv"}
)
AUDIO_EXT = frozenset({".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"})
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "devel": "val",
    "development": "val",
    "test": "test",
    "testing": "test",
}
COLUMNS = ("clip_id", "video", "audio", "split", "subject", "fold", "label", "annotation")


def check_root(root: str | os.PathLike[str], dataset: str) -> Path:
    """The dataset root as an absolute Path, or a ManifestError saying what is wrong with it."""
    p = Path(root).expanduser()
    if not p.exists():
        raise ManifestError(f"{dataset}: root {p} does not exist")
    if not p.is_dir():
        raise ManifestError(f"{dataset}: root {p} is not a folder")
    return p.resolve()


def nothing_found(root: Path, dataset: str, expected: str) -> ManifestError:
    """The error for a root that holds none of the dataset's files (wrong folder, usually)."""
    return ManifestError(
        f"{dataset}: found no clips under {root}; expected {expected}. "
        f"Is this the right folder (and adapter)?"
    )


def walk(root: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files under ``root`` (recursive, hidden folders skipped) with one of ``suffixes``, sorted."""
    want = {s.lower() for s in suffixes}
    out: list[Path] = []
    seen: set[str] = set()  # real folders visited: symlinked folders are followed, loops are not
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in want:
                out.append(Path(dirpath) / f)
    return sorted(out)


def as_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ManifestError(f"option {name}={value!r} must be an integer") from None


def as_float(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ManifestError(f"option {name}={value!r} must be a number") from None


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def as_list(value: Any) -> list[str] | None:
    """``"a,b"`` or ``["a", "b"]`` -> list; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def split_name(folder: str) -> str | None:
    """train/val/test for a split folder name (``Train_AFEW`` -> train), else None."""
    key = re.split(r"[_\-\s.]", folder.strip().lower())[0]
    return SPLIT_NAMES.get(folder.strip().lower()) or SPLIT_NAMES.get(key)


def _stable_key(s: str) -> str:
    return hashlib.sha1(s.encode()).hexdigest()


def subject_folds(subjects: Iterable[str], k: int) -> dict[str, int]:
    """Subject -> fold in 0..k-1: contiguous blocks of the sorted subject ids.

    Contiguous blocks keep e.g. RAVDESS's alternating male/female actor numbers balanced per
    fold; the assignment only depends on the set of subjects, so it is stable across runs.
    """
    subs = sorted(set(subjects))
    if k < 1:
        raise ManifestError(f"folds={k} must be >= 1")
    k = min(k, len(subs)) or 1
    return {s: i * k // len(subs) for i, s in enumerate(subs)}


def subject_splits(subjects: Iterable[str], val: float, test: float) -> dict[str, str]:
    """Speaker-independent train/val/test: subjects ordered by a hash of their id, then cut.

    Ordering by hash (not by id) avoids putting e.g. the first-recorded actors all in one
    partition, and stays stable whatever other subjects exist.
    """
    subs = sorted(set(subjects), key=_stable_key)
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise ManifestError(f"val={val}, test={test}: fractions must be in [0, 1) and sum below 1")
    n = len(subs)
    n_test = round(test * n)
    n_val = round(val * n)
    if n >= 3:  # keep at least one training subject
        n_test = min(n_test, n - 1)
        n_val = min(n_val, n - 1 - n_test)
    out = {}
    for i, s in enumerate(subs):
        out[s] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with the manifest columns first (only those present), sorted by id."""
    df = pd.DataFrame(list(rows))
    cols = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    df = df[cols]
    if "clip_id" in df.columns:
        df = df.sort_values("clip_id", kind="stable").reset_index(drop=True)
    if "fold" in df.columns:
        df["fold"] = df["fold"].astype("Int64")
    return df
