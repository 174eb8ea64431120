"""RECOLA: continuous valence/arousal at 25 Hz per participant (AVEC 2015/16 protocol).

Layout (any nesting under ROOT): ``recordings_audio/P16.wav``, ``recordings_video/P16.mp4``,
``ratings_gold_standard/arousal/P16.csv`` and ``ratings_gold_standard/valence/P16.csv`` (the
individual-rater folders, if present beside the gold standard, are ignored in its favour).
The ``annotation`` column names the arousal file; ``read_annotation`` reads the valence file
beside it. Participants without media or without both ratings are an error.

Split: AVEC's 9/9/9 train/dev/test. Files named the AVEC way (``train_1``, ``dev_3``,
``test_2``) carry it in the name. For participant ids (``P16``) the dataset ships no split
table, so participants are sorted by number and cut 9/9/rest into train/val/test; give the
exact protocol with ``splits=FILE.csv`` (columns ``subject,split``) to override.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from avemo.data.adapters import DATASETS
from avemo.data.adapters._common import (
    AUDIO_EXT,
    VIDEO_EXT,
    as_int,
    check_root,
    frame,
    nothing_found,
    split_name,
    walk,
)
from avemo.data.adapters.protocol import EvalProtocol
from avemo.data.manifest import ManifestError

_AVEC = re.compile(r"^(train|dev|test)_\d+$", re.I)
_PID = re.compile(r"^P(\d+)$", re.I)


def _one_per_stem(paths: list[Path], what: str, prefer: str | None = None) -> dict[str, Path]:
    by: dict[str, list[Path]] = {}
    for p in paths:
        by.setdefault(p.stem, []).append(p)
    out = {}
    for stem, ps in by.items():
        if len(ps) > 1 and prefer:
            ps = [p for p in ps if prefer in p.as_posix().lower()] or ps
        if len(ps) > 1:
            raise ManifestError(f"recola: several {what} files for {stem}: {[str(p) for p in ps]}")
        out[stem] = ps[0]
    return out


@DATASETS.register("recola")
class RecolaAdapter:
    """RECOLA: V/A csv at 25 Hz per participant, AVEC 9/9/9 train/dev/test by participant."""

    protocol = EvalProtocol(
        subject="the participant",
        split="AVEC's 9 / 9 / 9 train / dev / test (from the file names, or `splits=FILE.csv`)",
        fold="none: use `official`",
    )

    classes = None  # continuous valence/arousal

    def __init__(self, splits: str | None = None, per_split: int | str = 9) -> None:
        self.splits_file = splits
        self.per_split = as_int(per_split, "per_split")

    def _split_table(self) -> dict[str, str] | None:
        if not self.splits_file:
            return None
        p = Path(self.splits_file).expanduser()
        if not p.exists():
            raise ManifestError(f"recola: splits file {p} does not exist")
        t = pd.read_csv(p, dtype=str)
        if not {"subject", "split"} <= set(t.columns):
            raise ManifestError(
                f"recola: splits file {p} needs columns subject,split; has {list(t.columns)}"
            )
        return {s: split_name(v) or v for s, v in zip(t["subject"], t["split"], strict=True)}

    def scan(self, root: str | os.PathLike[str]) -> pd.DataFrame:
        root = check_root(root, "recola")
        ratings = [
            p for p in walk(root, {".csv"}) if p.parent.name.lower() in {"arousal", "valence"}
        ]
        arousal = _one_per_stem(
            [p for p in ratings if p.parent.name.lower() == "arousal"], "arousal", "gold"
        )
        valence = _one_per_stem(
            [p for p in ratings if p.parent.name.lower() == "valence"], "valence", "gold"
        )
        if not arousal:
            raise nothing_found(
                root,
                "recola",
                "ratings_gold_standard/arousal/P16.csv (+ valence/P16.csv) "
                "and recordings_audio/P16.wav or recordings_video/P16.mp4",
            )
        audio = _one_per_stem(walk(root, AUDIO_EXT), "audio")
        video = _one_per_stem(walk(root, VIDEO_EXT), "video")
        problems = []
        rows: list[dict[str, str]] = []
        for stem, a in sorted(arousal.items()):
            v = valence.get(stem)
            if v is None or v.parent.parent != a.parent.parent:
                problems.append(f"{stem}: no valence/{a.name} beside {a}")
                continue
            if stem not in audio and stem not in video:
                problems.append(f"{stem}: no recording (audio {stem}.wav or video {stem}.mp4)")
                continue
            row = {"clip_id": stem, "subject": stem, "annotation": str(a)}
            if stem in audio:
                row["audio"] = str(audio[stem])
            if stem in video:
                row["video"] = str(video[stem])
            rows.append(row)
        if problems:
            raise ManifestError("recola: incomplete participants:\n  " + "\n  ".join(problems[:10]))
        table = self._split_table()
        numbered = [
            (int(m.group(1)), r["subject"]) for r in rows if (m := _PID.match(r["subject"]))
        ]
        pids = [s for _, s in sorted(numbered, key=lambda t: t[0])]
        order = {s: i for i, s in enumerate(pids)}
        n = self.per_split
        for r in rows:
            s = r["subject"]
            if table is not None:
                if s not in table:
                    raise ManifestError(
                        f"recola: participant {s} is not in the splits file {self.splits_file}"
                    )
                r["split"] = table[s]
            elif m := _AVEC.match(s):
                r["split"] = split_name(m.group(1)) or m.group(1)  # always named: train|dev|test
            elif s in order:
                i = order[s]
                r["split"] = "train" if i < n else "val" if i < 2 * n else "test"
            else:
                raise ManifestError(
                    f"recola: cannot tell the split of {s!r} (neither P<number> nor train_/dev_/test_); "
                    "give --option splits=FILE.csv"
                )
        return frame(rows)
