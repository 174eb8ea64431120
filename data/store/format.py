"""The on-disk format: array names, clip statuses, the clip types and the per-clip checksum."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT_VERSION = 1
STATUSES = ("ok", "no_face", "no_audio", "no_video", "missing", "error")
# ``missing``: the media file the manifest names is not there (moved or deleted after the
# manifest was written); a rerun extracts the clip again once the file is back.
# The clip has no media for this modality at all (no path in the manifest, no audio stream):
# a missing modality, which stage two masks, unlike ``error`` (a fault) or ``no_face``.
MISSING_MODALITY = ("no_audio", "no_video")
ROW_ARRAYS = ("values", "timestamps", "mask")
CLIP_ARRAYS = ("offsets", "clip_ids", "status", "message")
# Every file is written once under a temporary name and never opened for writing by two
# processes, so HDF5's own file locks add nothing; "best-effort" keeps them where the
# filesystem has them and avoids "unable to lock file" on NFS / Lustre cluster scratch.
LOCKING = "best-effort"


def canonical(obj: Any) -> str:
    """The one JSON spelling (sorted keys, no spaces) of attributes and per-clip info, so equal
    values store and hash alike."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class ClipFeatures:
    """One clip's rows: ``values [T, ...]``, ``timestamps [T]`` (s), ``mask [T]``, status."""

    clip_id: str
    values: np.ndarray
    timestamps: np.ndarray
    mask: np.ndarray
    status: str = "ok"
    message: str = ""
    #: per-clip facts beside the rows (JSON-able), e.g. the face subject's tracks and gaps
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "\x00" in self.clip_id or not is_utf8(self.clip_id):
            raise ValueError(f"clip id {self.clip_id!r} has a NUL or a character UTF-8 cannot hold")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        n = len(self.values)
        if len(self.timestamps) != n or len(self.mask) != n:
            raise ValueError(
                f"clip {self.clip_id}: values has {n} rows but timestamps has "
                f"{len(self.timestamps)} and mask {len(self.mask)}"
            )

    @classmethod
    def empty(
        cls,
        clip_id: str,
        row_shape: tuple[int, ...],
        status: str,
        message: str = "",
        dtype: Any = np.float32,
    ) -> ClipFeatures:
        """A clip with no rows (no audio, decode error ...): recorded, never silently dropped."""
        return cls(
            clip_id,
            np.zeros((0, *row_shape), dtype),
            np.zeros(0, np.float64),
            np.zeros(0, bool),
            status,
            message,
        )


@dataclass
class RaggedArrays:
    """All rows of a feature set at once; clip ``i`` is ``values[offsets[i]:offsets[i+1]]``."""

    values: np.ndarray
    offsets: np.ndarray
    clip_ids: list[str]
    timestamps: np.ndarray
    mask: np.ndarray
    status: list[str]
    message: list[str] = field(default_factory=list)

    def clip(self, i: int) -> ClipFeatures:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return ClipFeatures(
            self.clip_ids[i],
            self.values[a:b],
            self.timestamps[a:b],
            self.mask[a:b],
            self.status[i],
            self.message[i] if self.message else "",
        )


def clip_digest(values: np.ndarray, timestamps: np.ndarray, mask: np.ndarray, status: str) -> int:
    """CRC-32 of one clip as stored (value bytes, float64 times, uint8 mask, status).

    Kept per clip in the ``crc32`` array, so damage on disk (a block of zeros, a bad sector) is
    found clip by clip and only those clips are rebuilt; CRC-32 runs at memory speed, so a
    whole file is checked for about the cost of reading it.
    """
    # ``.data``: the arrays' memory as a buffer, without a copy
    crc = zlib.crc32(np.ascontiguousarray(values).view(np.uint8).reshape(-1).data)
    crc = zlib.crc32(np.ascontiguousarray(timestamps, np.float64).view(np.uint8).data, crc)
    crc = zlib.crc32(np.ascontiguousarray(mask).astype(np.uint8, copy=False).data, crc)
    return zlib.crc32(status.encode(), crc)
