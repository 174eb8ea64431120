"""RAVDESS: the label is in the file name ``MM-VC-EE-II-SS-RR-AA.ext``.

MM modality (01 full audio-video, 02 video-only, 03 audio-only), VC vocal channel (01 speech,
02 song), EE emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust,
08 surprised), II intensity, SS statement, RR repetition, AA actor (odd male, even female).

The downloads come as ``Video_Speech_Actor_NN/Actor_NN/*.mp4`` (01 and 02 files) and
``Audio_Speech_Actors_01-24/Actor_NN/03-*.wav``; any nesting is accepted. One clip per
recording (everything but MM): video = the full-AV 01 file (else the video-only 02 file);
audio = the matching 03 wav (clean, no re-decode of AAC) else the 01 file's own audio track
(the audio column may name a container: extractors take its audio stream). A recording with
only a 02 file has no audio and is left out, a recording with only a 03 file is kept as
audio-only. Song (VC=02) is left out unless ``channel=song`` or ``channel=all``.
``clip_id`` = ``VC-EE-II-SS-RR-AA``; subject = ``Actor_AA``; split ``train`` for all with
``fold`` = actor-based k-fold (``folds``, default 6: four actors, two of each sex, per fold).
"""

from __future__ import annotations

import os
import re
from typing import Any

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
from avemo.data.manifest import ManifestError

CLASSES = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
NAME = re.compile(r"^(0[1-3])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)$")
_CHANNELS = {"speech": {"01"}, "song": {"02"}, "all": {"01", "02"}}


@DATASETS.register("ravdess")
class RavdessAdapter:
    """RAVDESS: MM-VC-EE-II-SS-RR-AA names, 8 classes, actor k-fold, speech AV files."""

    protocol = EvalProtocol(
        subject="the actor (`Actor_NN`)",
        split="every clip `train`",
        fold="an **actor** k-fold (`folds`, default 6: four actors, two of each sex, per fold)",
    )

    classes = CLASSES

    def __init__(self, folds: int | str = 6, channel: str = "speech") -> None:
        self.folds = as_int(folds, "folds")
        if channel not in _CHANNELS:
            raise ManifestError(f"ravdess: channel={channel!r}; choose one of {sorted(_CHANNELS)}")
        self.channels = _CHANNELS[channel]

    def scan(self, root: str | os.PathLike[str]) -> pd.DataFrame:
        root = check_root(root, "ravdess")
        found: dict[str, dict[str, str]] = {}
        for f in walk(root, {".mp4", ".wav"}):
            m = NAME.match(f.stem)
            if not m or m.group(2) not in self.channels:
                continue
            mod = m.group(1)
            if (mod == "03") != (f.suffix.lower() == ".wav"):
                continue  # e.g. a converted 01-*.wav: not part of the official naming
            key = f.stem[3:]
            have = found.setdefault(key, {})
            if mod in have:
                raise ManifestError(f"ravdess: recording {f.stem} found twice: {have[mod]} and {f}")
            have[mod] = str(f)
        rows: list[dict[str, Any]] = []  # manifest rows: str columns, the fold number
        for key, have in found.items():
            video = have.get("01") or have.get("02")
            audio = have.get("03") or have.get("01")
            if audio is None:
                continue
            vc, ee, _ii, _ss, _rr, aa = key.split("-")
            row = {
                "clip_id": key,
                "split": "train",
                "subject": f"Actor_{aa}",
                "label": CLASSES[int(ee) - 1],
                "audio": audio,
            }
            if video:
                row["video"] = video
            rows.append(row)
        if not rows:
            raise nothing_found(
                root,
                "ravdess",
                "files named MM-VC-EE-II-SS-RR-AA.mp4/.wav (e.g. 01-01-03-01-01-01-12.mp4)",
            )
        fold_of = subject_folds([r["subject"] for r in rows], self.folds)
        for r in rows:
            r["fold"] = fold_of[r["subject"]]
        return frame(rows)
