"""The built-in demo corpus (``avemo.data.demo.build_demo_corpus``): reads its ``labels.csv``.

The corpus folder holds ``clips/<clip_id>.mp4`` (video + muxed speech) and ``labels.csv``
(clip_id, file, label, split, subject, plus where each clip was cut from). Each clip's one
file serves as both video and audio. Labels are illustrative (see ``avemo.data.demo``).
"""

from __future__ import annotations

import os

import pandas as pd

from avemo.data.adapters import DATASETS
from avemo.data.adapters._common import check_root, frame
from avemo.data.adapters.protocol import EvalProtocol
from avemo.data.manifest import ManifestError

CLASSES = ["happy", "neutral", "sad"]
LABELS_FILE = "labels.csv"


@DATASETS.register("demo")
class DemoAdapter:
    """Demo corpus built from public test media (labels.csv + clips/*.mp4); 3 classes."""

    protocol = EvalProtocol(
        subject="the person in the source video",
        split="fixed in the demo's `labels.csv`",
        fold="none",
    )

    classes = CLASSES

    def scan(self, root: str | os.PathLike[str]) -> pd.DataFrame:
        root = check_root(root, "demo")
        table = root / LABELS_FILE
        if not table.exists():
            raise ManifestError(
                f"demo: {table} not found; build the corpus first "
                "(python -m avemo.data.demo DIR, or make demo)"
            )
        labels = pd.read_csv(table, dtype=str)
        need = {"clip_id", "file", "label", "split", "subject"}
        if not need <= set(labels.columns):
            raise ManifestError(f"demo: {table} lacks columns {sorted(need - set(labels.columns))}")
        rows = []
        for r in labels.to_dict("records"):
            path = str((root / r.pop("file")).resolve())
            rows.append({**r, "video": path, "audio": path})
        if not rows:
            raise ManifestError(f"demo: {table} lists no clips")
        return frame(rows)
