"""EmoDB (Berlin Database of Emotional Speech): audio only, the label is in the file name.

``wav/03a01Fa.wav``: speaker ``03`` (chars 1-2), sentence ``a01`` (3-5), emotion (6th char:
W anger, L boredom, E disgust, A fear, F happiness, T sadness, N neutral), version (7th).
Every clip is ``train``; ``fold`` is a speaker-independent k-fold (``folds``, default 5,
contiguous blocks of the sorted speaker ids; ``folds=0`` = leave one speaker out).
"""

from __future__ import annotations

import os
import re

import pandas as pd

from avemo.data.adapters import DATASETS
from avemo.data.adapters._common import (
    as_int,
    check_root,
    frame,
    nothing_found,
    subject_folds,
    walk,
)
from avemo.data.adapters.protocol import EvalProtocol

EMOTIONS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
CLASSES = sorted(EMOTIONS.values())
NAME = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])$")


@DATASETS.register("emodb")
class EmoDbAdapter:
    """EmoDB: wav/03a01Fa.wav, 7 classes from the 6th character, speaker = first 2 chars."""

    protocol = EvalProtocol(
        subject="the speaker",
        split="every clip `train`",
        fold="a **speaker** k-fold (`folds`, default 5; `folds=0` = leave one speaker out)",
    )

    classes = CLASSES

    def __init__(self, folds: int | str = 5) -> None:
        self.folds = as_int(folds, "folds")

    def scan(self, root: str | os.PathLike[str]) -> pd.DataFrame:
        root = check_root(root, "emodb")
        rows = []
        for f in walk(root, {".wav"}):
            m = NAME.match(f.stem)
            if not m:
                continue
            rows.append(
                {
                    "clip_id": f.stem,
                    "audio": str(f),
                    "split": "train",
                    "subject": m.group(1),
                    "label": EMOTIONS[m.group(3)],
                    "text": m.group(2),
                }
            )
        if not rows:
            raise nothing_found(root, "emodb", "wav files named like 03a01Fa.wav")
        speakers = [r["subject"] for r in rows]
        fold_of = subject_folds(speakers, self.folds or len(set(speakers)))
        for r in rows:
            r["fold"] = fold_of[r["subject"]]
        return frame(rows)
