"""CREMA-D: ``<actor>_<sentence>_<emotion>_<level>`` names, e.g. ``1001_DFA_ANG_XX``.

Video from ``VideoFlash/*.flv`` (or converted ``.mp4``/``.avi``), audio from ``AudioWAV/*.wav``;
files with the same name stem form one clip (either may be missing). 6 classes: ANG angry,
DIS disgust, FEA fear, HAP happy, NEU neutral, SAD sad; the level (LO/MD/HI/XX) is kept in an
``intensity`` column. The split is speaker-independent: actors ordered by a hash of their id
and cut into train/val/test (``val``=0.1, ``test``=0.2 of the actors); ``fold`` is an actor
k-fold (``folds``, default 5) for cross-validation protocols.
"""

from __future__ import annotations

import os
import re

import pandas as pd

from avemo.data.adapters import DATASETS
from avemo.data.adapters._common import (
    as_float,
    as_int,
    check_root,
    frame,
    nothing_found,
    subject_folds,
    subject_splits,
    walk,
)
from avemo.data.adapters.protocol import EvalProtocol
from avemo.data.manifest import ManifestError

EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
CLASSES = sorted(EMOTIONS.values())
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_(LO|MD|HI|XX|X)$")


@DATASETS.register("cremad")
class CremaDAdapter:
    """CREMA-D: 1001_DFA_ANG_XX.{flv,mp4,wav}, 6 classes, speaker-independent split."""

    protocol = EvalProtocol(
        subject="the actor",
        split=(
            "speaker-independent train / val / test cut by actor (`val=0.1`, `test=0.2` of "
            "the actors)"
        ),
        fold="an **actor** k-fold (`folds`, default 5)",
    )

    classes = CLASSES

    def __init__(
        self, val: float | str = 0.1, test: float | str = 0.2, folds: int | str = 5
    ) -> None:
        self.val = as_float(val, "val")
        self.test = as_float(test, "test")
        self.folds = as_int(folds, "folds")

    def scan(self, root: str | os.PathLike[str]) -> pd.DataFrame:
        root = check_root(root, "cremad")
        clips: dict[str, dict] = {}
        for f in walk(root, {".flv", ".mp4", ".avi", ".wav"}):
            m = NAME.match(f.stem)
            if not m:
                continue
            col = "audio" if f.suffix.lower() == ".wav" else "video"
            row = clips.setdefault(
                f.stem,
                {
                    "clip_id": f.stem,
                    "subject": m.group(1),
                    "label": EMOTIONS[m.group(3)],
                    "sentence": m.group(2),
                    "intensity": m.group(4),
                },
            )
            if col in row:
                raise ManifestError(f"cremad: two {col} files for {f.stem}: {row[col]} and {f}")
            row[col] = str(f)
        if not clips:
            raise nothing_found(
                root, "cremad", "VideoFlash/1001_DFA_ANG_XX.flv and/or AudioWAV/1001_DFA_ANG_XX.wav"
            )
        rows = list(clips.values())
        actors = [r["subject"] for r in rows]
        split_of = subject_splits(actors, self.val, self.test)
        fold_of = subject_folds(actors, self.folds)
        for r in rows:
            r["split"] = split_of[r["subject"]]
            r["fold"] = fold_of[r["subject"]]
        return frame(rows)
