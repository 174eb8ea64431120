"""Folder-per-class adapter: ``ROOT/<class>/*.mp4`` or ``ROOT/<split>/<class>/*.wav``.

A top-level folder named like a split (train, val/valid/validation/dev, test; a suffix such as
``Train_AFEW`` is fine) gives the split; without one every clip is ``train``. A video and an
audio file with the same stem in the same class folder become one clip. ``clip_id`` is the
path relative to ROOT without extension (stable and unique). ``subject_regex`` (applied to
the file stem; first group, or the whole match) names the subject; by default every clip is
its own subject, since folder layouts carry no speaker information.
"""

from __future__ import annotations

import os
import re

import pandas as pd

from avemo.data.adapters import DATASETS
from avemo.data.adapters._common import (
    AUDIO_EXT,
    VIDEO_EXT,
    as_list,
    check_root,
    frame,
    nothing_found,
    split_name,
    walk,
)
from avemo.data.adapters.protocol import EvalProtocol
from avemo.data.manifest import ManifestError


@DATASETS.register("folder")
class FolderAdapter:
    """Folder per class: ROOT/[split/]<class>/*.{mp4,avi,wav,...}."""

    protocol = EvalProtocol(
        subject="the clip itself, or `subject_regex` on the file name",
        split="a top-level split folder, else `train`",
        fold="none",
    )

    def __init__(
        self, classes: str | list[str] | None = None, subject_regex: str | None = None
    ) -> None:
        self.classes = as_list(classes)
        self._declared = self.classes is not None
        try:
            self.subject_re = re.compile(subject_regex) if subject_regex else None
        except re.error as e:
            raise ManifestError(
                f"folder: subject_regex {subject_regex!r} is not a valid regex: {e}"
            ) from None

    def _subject(self, stem: str) -> str:
        if self.subject_re is None:
            return stem
        m = self.subject_re.search(stem)
        if not m:
            raise ManifestError(
                f"folder: subject_regex {self.subject_re.pattern!r} does not match {stem!r}"
            )
        return m.group(1) if m.groups() else m.group(0)

    def scan(self, root: str | os.PathLike[str]) -> pd.DataFrame:
        root = check_root(root, "folder")
        clips: dict[str, dict] = {}
        for f in walk(root, VIDEO_EXT | AUDIO_EXT):
            rel = f.relative_to(root)
            parts = rel.parts
            if len(parts) == 2:
                split, label = "train", parts[0]
            elif len(parts) == 3 and (named := split_name(parts[0])):
                split, label = named, parts[1]
            else:
                continue  # files at the top level or deeper than split/class are not clips
            cid = rel.with_suffix("").as_posix()
            row = clips.setdefault(
                cid,
                {"clip_id": cid, "split": split, "subject": self._subject(f.stem), "label": label},
            )
            col = "video" if f.suffix.lower() in VIDEO_EXT else "audio"
            if col in row:
                raise ManifestError(f"folder: two {col} files for clip {cid}: {row[col]} and {f}")
            row[col] = str(f)
        if not clips:
            raise nothing_found(
                root, "folder", "ROOT/<class>/<file> or ROOT/<split>/<class>/<file> media files"
            )
        df = frame(list(clips.values()))
        if not self._declared:
            self.classes = sorted(df["label"].unique().tolist())
        return df
