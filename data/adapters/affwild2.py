"""Aff-Wild2 (ABAW VA track): videos + per-frame valence/arousal text files.

Layout (any nesting under ROOT): videos ``batch1/*.mp4|avi``, ``batch2/...``, ``new_vids/...``;
annotations ``VA_Estimation_Challenge/Train_Set/<name>.txt`` and ``Validation_Set/<name>.txt``
(header ``valence,arousal``, one line per frame, -5 = unlabelled; read them with
``avemo.data.annotations.read_annotation``). Only .txt files under a split folder whose first
line is that header count, so the EXPR/AU annotation sets beside them are ignored.

Two-person videos have one annotation file per person, ``<video>_left.txt`` and
``<video>_right.txt``; both map to the one video file ``<video>.mp4``. One clip per annotation
file: ``clip_id`` = annotation stem, subject = that stem (one person), split train/val from the
folder. ``fold`` (``folds=K``, default none) is a k-fold over videos, so both persons of one
video stay together. A missing video is an error (``skip_missing=true`` to drop such rows);
``fps=F`` adds an ``fps`` column for videos whose frame rate cannot be read.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import pandas as pd

from avemo.data.adapters import DATASETS
from avemo.data.adapters._common import (
    VIDEO_EXT,
    as_bool,
    as_float,
    as_int,
    check_root,
    frame,
    nothing_found,
    split_name,
    subject_folds,
    walk,
)
from avemo.data.adapters.protocol import EvalProtocol
from avemo.data.manifest import ManifestError

_PERSON = re.compile(r"_(left|right)$")


def _is_va(path: os.PathLike[str]) -> bool:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return f.readline().strip().lower().replace(" ", "").startswith("valence,arousal")


@DATASETS.register("affwild2")
class AffWild2Adapter:
    """Aff-Wild2: videos + Train_Set/Validation_Set per-frame V/A txt (-5 = unlabelled)."""

    protocol = EvalProtocol(
        subject="one annotated person (`<video>_left` / `_right`)",
        split="the challenge's Train / Validation sets",
        fold=(
            "with `folds=K`: a k-fold over **videos**, so both persons of a video stay "
            "together (default none)"
        ),
    )

    classes = None  # continuous valence/arousal

    def __init__(
        self, folds: int | str = 0, skip_missing: bool | str = False, fps: float | str | None = None
    ) -> None:
        self.folds = as_int(folds, "folds")
        self.skip_missing = as_bool(skip_missing)
        self.fps = as_float(fps, "fps") if fps is not None else None

    def scan(self, root: str | os.PathLike[str]) -> pd.DataFrame:
        root = check_root(root, "affwild2")
        videos: dict[str, str] = {}
        for v in walk(root, VIDEO_EXT):
            if v.stem in videos:
                raise ManifestError(
                    f"affwild2: two videos named {v.stem}: {videos[v.stem]} and {v}"
                )
            videos[v.stem] = str(v)
        rows: list[dict[str, Any]] = []
        missing: list[str] = []
        for a in walk(root, {".txt"}):
            split = split_name(a.parent.name)
            if split is None or not _is_va(a):
                continue
            stem = a.stem
            video_key = stem if stem in videos else _PERSON.sub("", stem)
            if video_key not in videos:
                missing.append(str(a))
                continue
            row: dict[str, Any] = {
                "clip_id": stem,
                "video": videos[video_key],
                "audio": videos[video_key],
                "split": split,
                "subject": stem,
                "annotation": str(a),
                "video_name": video_key,
            }
            if self.fps is not None:
                row["fps"] = self.fps
            rows.append(row)
        if missing and not self.skip_missing:
            shown = "\n  ".join(missing[:10]) + (
                f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
            )
            raise ManifestError(
                f"affwild2: {len(missing)} annotation file(s) have no video under {root} "
                f"(looked for <name>.mp4/.avi, and <name> without _left/_right):\n  {shown}\n"
                "Pass --option skip_missing=true to leave them out."
            )
        if missing:
            warnings.warn(
                f"affwild2: left out {len(missing)} annotation file(s) without a video",
                stacklevel=2,
            )
        if not rows:
            raise nothing_found(
                root,
                "affwild2",
                "Train_Set/<video>.txt and Validation_Set/<video>.txt "
                "annotation files (header valence,arousal) next to the videos",
            )
        if self.folds:
            fold_of = subject_folds([r["video_name"] for r in rows], self.folds)
            for r in rows:
                r["fold"] = fold_of[r["video_name"]]
        return frame(rows)
