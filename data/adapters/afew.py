"""AFEW (EmotiW): ``Train/<Emotion>/*.avi`` and ``Val/<Emotion>/*.avi``; 7 classes.

Split folders may carry a suffix (``Train_AFEW``, ``Val_AFEW``); emotion folders are matched
case-insensitively (``Angry`` -> ``angry``). AFEW has no actor ids, so each clip is its own
subject (the official Train/Val split is what protocols use). The unlabelled ``Test`` folder is
listed only with ``include_test=true`` (label left empty). ``clip_id`` = ``<split>/<stem>``.
"""

from __future__ import annotations

import os

import pandas as pd

from avemo.data.adapters import DATASETS
from avemo.data.adapters._common import as_bool, check_root, frame, nothing_found, split_name, walk
from avemo.data.adapters.protocol import EvalProtocol
from avemo.data.manifest import ManifestError

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


@DATASETS.register("afew")
class AfewAdapter:
    """AFEW 7.0: Train/Val/<Emotion>/*.avi, 7 classes."""

    protocol = EvalProtocol(
        subject="the clip itself (AFEW has no actor ids)",
        split="the corpus's Train / Val folders (Test only with `include_test=true`, unlabelled)",
        fold="none: use `official`",
    )

    classes = CLASSES

    def __init__(self, include_test: bool | str = False) -> None:
        self.include_test = as_bool(include_test)

    def scan(self, root: str | os.PathLike[str]) -> pd.DataFrame:
        root = check_root(root, "afew")
        rows = []
        for f in walk(root, {".avi", ".mp4"}):
            parts = f.relative_to(root).parts
            if len(parts) < 2:
                continue
            # the split folder is the nearest ancestor named like a split (archives nest it)
            idx = next((i for i in range(len(parts) - 2, -1, -1) if split_name(parts[i])), None)
            if idx is None:
                continue
            split = split_name(parts[idx])
            rest = parts[idx + 1 : -1]
            if split == "test":
                if not self.include_test or rest:
                    continue
                label = None
            else:
                if len(rest) != 1:
                    continue
                label = rest[0].lower()
                if label not in CLASSES:
                    raise ManifestError(
                        f"afew: folder {rest[0]!r} in {parts[idx]} is not an AFEW emotion {CLASSES}"
                    )
            cid = f"{split}/{f.stem}"
            rows.append(
                {"clip_id": cid, "video": str(f), "split": split, "subject": cid, "label": label}
            )
        if not rows:
            raise nothing_found(root, "afew", "Train/<Emotion>/*.avi and Val/<Emotion>/*.avi")
        return frame(rows)
