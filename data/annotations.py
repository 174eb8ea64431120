"""Per-frame valence/arousal annotations -> ``DataFrame[time, valence, arousal]`` (seconds).

Stage two turns these into frame labels. Formats, recognised from the file itself:

* Aff-Wild2 (``Train_Set/<video>.txt``): header ``valence,arousal``, one line per video frame,
  ``-5`` = unlabelled (-> NaN). Time = frame index / fps, fps read from the video with PyAV
  (``video=``) unless ``fps=`` is given.
* RECOLA (``.../arousal/P16.csv`` with ``.../valence/P16.csv`` beside it): the manifest names
  the arousal file, the valence file is its sibling. ``;`` or ``,`` separated, with or without
  a header; a ``time`` column is used when present, otherwise rows are 0.04 s apart (25 Hz).
  Several rater columns are averaged (the gold standard has one).
* Generic CSV with ``time, valence, arousal`` columns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avemo.data.manifest import ManifestError

UNLABELLED = -5.0
RECOLA_STEP_S = 0.04
_DIMS = ("valence", "arousal")


class AnnotationError(ManifestError):
    """An annotation file that cannot be read; the message names the file and the problem."""


def video_fps(video: str | os.PathLike[str]) -> float:
    """Average frame rate of a video's first stream (PyAV)."""
    try:
        import av
    except ImportError:  # pragma: no cover - PyAV is a dependency; keep the message clear anyway
        raise AnnotationError(
            f"PyAV is not installed: cannot read the frame rate of {video}; pass fps="
        ) from None
    try:
        with av.open(str(video)) as c:
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
    except (av.FFmpegError, IndexError, OSError) as e:
        raise AnnotationError(f"cannot read the frame rate of {video}: {e}") from None
    if not rate:
        raise AnnotationError(f"{video} has no frame rate; pass fps=")
    return float(rate)


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig") as f:
        return f.readline().strip()


def _read_affwild2(
    path: Path, fps: float | None, video: str | os.PathLike[str] | None
) -> pd.DataFrame:
    if fps is None:
        if video is None:
            raise AnnotationError(
                f"{path}: Aff-Wild2 annotations count frames; give fps= or the video"
            )
        fps = video_fps(video)
    if not fps > 0:
        raise AnnotationError(f"{path}: fps={fps} must be positive")
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot parse: {e}") from None
    df.columns = [c.strip().lower() for c in df.columns]
    vals = df[list(_DIMS)].apply(pd.to_numeric, errors="coerce").astype("float64")
    vals = vals.mask(vals <= UNLABELLED)
    return pd.DataFrame(
        {
            "time": np.arange(len(df), dtype="float64") / float(fps),
            "valence": vals["valence"].to_numpy(),
            "arousal": vals["arousal"].to_numpy(),
        }
    )


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _read_rated(path: Path) -> tuple[np.ndarray | None, np.ndarray]:
    """One RECOLA dimension file -> (times or None, mean rating per row)."""
    if not path.exists():
        raise AnnotationError(
            f"{path} does not exist (RECOLA needs arousal and valence files side by side)"
        )
    first = _first_line(path)
    sep = ";" if first.count(";") > first.count(",") else ","
    has_header = not all(_is_number(x) for x in first.split(sep) if x.strip())
    try:
        df = pd.read_csv(path, sep=sep, header=0 if has_header else None, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot parse: {e}") from None
    df = df.dropna(axis=1, how="all")  # trailing separators make empty columns
    df.columns = [str(c).strip().lower() for c in df.columns]
    num = df.apply(pd.to_numeric, errors="coerce")
    time_cols = [c for c in df.columns if c in {"time", "frametime", "timestamp", "time_s"}]
    if time_cols:
        times = num[time_cols[0]].to_numpy(dtype="float64")
        values = num.drop(columns=time_cols)
    elif not has_header and num.shape[1] == 2:
        times = num.iloc[:, 0].to_numpy(dtype="float64")
        values = num.iloc[:, 1:]
    else:
        times = None
        values = num
    values = values.select_dtypes("number")
    if values.shape[1] == 0:
        raise AnnotationError(f"{path}: no rating column found (columns {list(df.columns)})")
    return times, values.mean(axis=1, skipna=True).to_numpy(dtype="float64")


def _read_recola(path: Path) -> pd.DataFrame:
    dim = path.parent.name.lower()
    other = "valence" if dim == "arousal" else "arousal"
    sibling = path.parent.parent / other / path.name
    if not sibling.exists():  # folder names may be capitalised
        matches = [d for d in path.parent.parent.iterdir() if d.name.lower() == other]
        sibling = (matches[0] / path.name) if matches else sibling
    t1, v1 = _read_rated(path)
    t2, v2 = _read_rated(sibling)
    n = min(len(v1), len(v2))
    if abs(len(v1) - len(v2)) > 1:
        raise AnnotationError(f"{path} has {len(v1)} rows but {sibling} has {len(v2)}")
    times = t1 if t1 is not None else t2
    times = times[:n] if times is not None else np.arange(n, dtype="float64") * RECOLA_STEP_S
    ratings = {dim: v1[:n], other: v2[:n]}
    return pd.DataFrame(
        {"time": times, "valence": ratings["valence"], "arousal": ratings["arousal"]}
    )


def read_annotation(
    path: str | os.PathLike[str],
    fps: float | None = None,
    video: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Read one clip's valence/arousal track; unlabelled frames are NaN, times in seconds."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"annotation file {path} does not exist")
    head = _first_line(path).lower().replace(" ", "")
    if head.startswith("valence,arousal"):
        out = _read_affwild2(path, fps, video)
    elif path.parent.name.lower() in _DIMS:
        out = _read_recola(path)
    else:
        try:
            # separator from the header line: pandas' sniffing needs its slow Python engine
            sep = max((";", ",", "\t"), key=head.count)
            df = pd.read_csv(path, sep=sep, encoding="utf-8-sig")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise AnnotationError(f"{path}: cannot parse: {e}") from None
        df.columns = [str(c).strip().lower() for c in df.columns]
        if not {"time", *_DIMS} <= set(df.columns):
            raise AnnotationError(
                f"{path}: unknown annotation format (want a 'valence,arousal' header, a RECOLA "
                f"arousal/valence folder pair, or time,valence,arousal columns; got {list(df.columns)})"
            )
        out = df[["time", *_DIMS]].apply(pd.to_numeric, errors="coerce").astype("float64")
        out[list(_DIMS)] = out[list(_DIMS)].mask(out[list(_DIMS)] <= UNLABELLED)
    return out.reset_index(drop=True)


def read_clip_annotation(row: Mapping[str, Any]) -> pd.DataFrame:
    """``read_annotation`` for one manifest row: uses its ``annotation``, ``video`` and optional
    ``fps`` columns, so Aff-Wild2 frame indices become seconds with the clip's own frame rate."""

    def get(key: str) -> Any:
        v = row.get(key)
        return None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else v

    path = get("annotation")
    if path is None:
        raise AnnotationError(f"clip {row.get('clip_id')!r} has no annotation path")
    fps = get("fps")
    return read_annotation(path, fps=float(fps) if fps is not None else None, video=get("video"))
