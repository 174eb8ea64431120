"""The manifest: one row per clip with a stable id, media paths, split, subject and labels."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from avemo.errors import UserError

REQUIRED = ("clip_id", "split", "subject")
MEDIA = ("video", "audio")
OPTIONAL = ("fold", "label", "annotation")
SHOW_ROWS = 10


class ManifestError(UserError, ValueError):
    """A manifest that cannot be used; the message lists the offending rows."""


def _rows(df: pd.DataFrame, bad: pd.Series, what: str, cols: Iterable[str]) -> str:
    sub = df.loc[bad, [c for c in cols if c in df.columns]]
    head = sub.head(SHOW_ROWS).to_string()
    more = f"\n  ... and {len(sub) - SHOW_ROWS} more" if len(sub) > SHOW_ROWS else ""
    return f"{len(sub)} row(s) {what}:\n{head}{more}"


def validate(
    df: pd.DataFrame,
    classes: Iterable[str] | None = None,
    check_files: bool = True,
    base: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Return a clean copy of ``df`` or raise one ManifestError listing every problem found."""
    problems: list[str] = []
    missing_cols = [c for c in REQUIRED if c not in df.columns]
    if not any(c in df.columns for c in MEDIA):
        missing_cols.append("video or audio")
    if "label" not in df.columns and "annotation" not in df.columns:
        missing_cols.append("label or annotation")
    if missing_cols:
        raise ManifestError(f"manifest lacks column(s) {missing_cols}; it has {list(df.columns)}")
    df = df.copy()
    for c in (*REQUIRED, *MEDIA, *OPTIONAL):
        if c in df.columns and c != "fold":
            df[c] = df[c].astype("string")
    empty_id = df["clip_id"].isna() | (df["clip_id"].str.strip() == "")
    if empty_id.any():
        problems.append(_rows(df, empty_id, "have an empty clip_id", df.columns))
    dup = df["clip_id"].duplicated(keep=False) & ~empty_id
    if dup.any():
        problems.append(_rows(df, dup, "share a clip_id", ("clip_id", *MEDIA)))
    media_cols = [c for c in MEDIA if c in df.columns]
    no_media = df[media_cols].isna().all(axis=1)
    if no_media.any():
        problems.append(_rows(df, no_media, "have neither a video nor an audio path", df.columns))
    if check_files:
        root = Path(base) if base else Path(".")
        for c in [*media_cols, *(["annotation"] if "annotation" in df.columns else [])]:
            paths = df[c]
            gone = paths.notna() & ~paths.fillna("").map(lambda p: (root / p).exists())
            if gone.any():
                problems.append(_rows(df, gone, f"point at a missing {c} file", ("clip_id", c)))
    if classes is not None and "label" in df.columns:
        known = set(classes)
        unknown = df["label"].notna() & ~df["label"].isin(known)
        if unknown.any():
            problems.append(
                _rows(df, unknown, f"have a label outside {sorted(known)}", ("clip_id", "label"))
            )
    if problems:
        raise ManifestError("invalid manifest:\n" + "\n".join(problems))
    return df


def _read_table(path: Path) -> pd.DataFrame:
    """The manifest's rows, or a ManifestError saying why the file cannot be one.

    Refused before anything is extracted: a missing, unreadable, empty or binary file, a file
    pandas cannot parse, and a header without rows (which would otherwise write an empty
    feature file and exit 0).
    """
    fix = "build one with `avemo manifest DATASET ROOT -o PATH`"
    if not path.exists():
        raise ManifestError(f"manifest {path} does not exist ({fix})")
    if path.is_dir():
        raise ManifestError(f"manifest {path} is a folder, not a .csv or .parquet file ({fix})")
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError as e:
        raise ManifestError(f"manifest {path} cannot be read: {e.strerror or e}") from None
    if not head.strip():
        raise ManifestError(f"manifest {path} is empty ({fix})")
    parquet = head[:4] == b"PAR1"
    if not parquet and (b"\0" in head or _not_text(head)):
        raise ManifestError(
            f"manifest {path} is a binary file, not a CSV (or Parquet) manifest ({fix})"
        )
    try:
        df = pd.read_parquet(path) if parquet else pd.read_csv(path, dtype=str)
    except Exception as e:  # noqa: BLE001 - any parser failure is the file's, reported once
        raise ManifestError(f"manifest {path} cannot be parsed: {type(e).__name__}: {e}") from None
    if len(df) == 0:
        raise ManifestError(
            f"manifest {path} has a header ({', '.join(map(str, df.columns))}) but no rows ({fix})"
        )
    return df


def _not_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(head) - 4  # a multi-byte character cut at the 8 KiB boundary is fine
    return False


def load_manifest(
    path: str | os.PathLike[str],
    classes: Iterable[str] | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """Read a CSV or Parquet manifest; relative media paths are taken from its folder."""
    path = Path(path)
    df = _read_table(path)
    if "fold" in df.columns:
        df["fold"] = pd.to_numeric(df["fold"], errors="coerce").astype("Int64")
    df = validate(df, classes=classes, check_files=check_files, base=path.parent)
    for c in (*MEDIA, "annotation"):
        if c in df.columns:
            df[c] = (
                df[c]
                .map(
                    lambda p: (
                        p if pd.isna(p) or os.path.isabs(p) else str((path.parent / p).resolve())
                    )
                )
                .astype("string")
            )
    if "classes" not in df.attrs and "label" in df.columns:
        df.attrs["classes"] = sorted(df["label"].dropna().unique().tolist())
    return df


def save_manifest(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
