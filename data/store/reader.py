"""Reading feature files: ``FeatureFile`` (provenance, one clip, every row, mmap) and ``verify_file``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from avemo.data.store.format import (
    CLIP_ARRAYS,
    LOCKING,
    ROW_ARRAYS,
    ClipFeatures,
    RaggedArrays,
    clip_digest,
)
from avemo.data.store.provenance import check_provenance, read_provenance
from avemo.errors import DamagedFileError, UserError


class FeatureFileError(UserError, ValueError):
    """A path that is not a readable avemo feature file (truncated, foreign, older format)."""


class MissingFeatureFileError(UserError, FileNotFoundError):
    """A feature file path that does not exist (the message says which command makes it)."""


def decode_strings(arr: Any) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in arr[()]]


def open_h5(path: Path) -> h5py.File:
    """Open a feature file or shard, turning HDF5's errors into one clear message."""
    try:
        f = h5py.File(path, "r", locking=LOCKING)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise FeatureFileError(f"{path} is not a readable HDF5 feature file ({e})") from None
    missing = [k for k in (*ROW_ARRAYS, *CLIP_ARRAYS) if k not in f]
    if missing:
        f.close()
        raise FeatureFileError(f"{path} is not an avemo feature file: it lacks {missing}")
    return f


def read_info(h: h5py.File, n: int) -> list[str]:
    """Per-clip JSON info strings (``{}`` for files written without them)."""
    return decode_strings(h["info"]) if "info" in h else ["{}"] * n


def _memmap(ds: h5py.Dataset, path: Path) -> np.ndarray | None:
    """A read-only memmap of a contiguous, uncompressed, allocated dataset; None otherwise."""
    if ds.chunks is not None or ds.compression is not None or ds.size == 0:
        return None
    offset = ds.id.get_offset()
    if offset is None:
        return None
    return np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)


class FeatureFile:
    """Read API for stage two: provenance, one clip, or every row at once.

    ``mmap=True`` maps the row arrays (values, timestamps, mask) straight from the file when
    they are stored contiguous and uncompressed (the default layout): ``load_all`` then costs no
    read at all and pages come in on first touch. Otherwise it silently reads them.
    """

    def __init__(self, path: str | os.PathLike[str], mmap: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise MissingFeatureFileError(
                f"feature file {self.path} does not exist (run `avemo features`)"
            )
        self._f = open_h5(self.path)
        self.provenance = read_provenance(self._f)
        self.offsets = self._f["offsets"][()]
        self.clip_ids = decode_strings(self._f["clip_ids"])
        self.status = decode_strings(self._f["status"])
        self.message = decode_strings(self._f["message"])
        self.info = read_info(self._f, len(self.clip_ids))
        self._index = {c: i for i, c in enumerate(self.clip_ids)}
        self._ds = {name: self._f[name] for name in ROW_ARRAYS}  # lookups cost ~50 us each
        self._maps: dict[str, np.ndarray] = {}
        if mmap:
            for name in ROW_ARRAYS:
                m = _memmap(self._f[name], self.path)
                if m is not None:
                    self._maps[name] = m

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __contains__(self, clip_id: object) -> bool:
        return clip_id in self._index

    @property
    def is_mmapped(self) -> bool:
        return bool(self._maps)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self._f["values"].shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self._f["values"].dtype

    @property
    def n_rows(self) -> int:
        return int(self._f["values"].shape[0])

    def verify(self) -> list[str] | None:
        """Clip ids whose rows no longer match their stored CRC-32 (damage on disk); None for
        a file written before checksums were kept. Reads every row once."""
        if "crc32" not in self._f:
            return None
        want = self._f["crc32"][()]
        if len(want) != len(self.clip_ids):
            raise DamagedFileError(
                f"{self.path} is damaged: {len(want)} checksums for "
                f"{len(self.clip_ids)} clips; delete it and rerun the extraction"
            )
        bad = []
        for i, cid in enumerate(self.clip_ids):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            if not 0 <= a <= b <= self.n_rows:
                bad.append(cid)
                continue
            got = clip_digest(
                self._rows("values", a, b),
                self._rows("timestamps", a, b),
                self._rows("mask", a, b),
                self.status[i],
            )
            if got != int(want[i]):
                bad.append(cid)
        return bad

    @property
    def logit_classes(self) -> list[str] | None:
        """Class names of the logits that end each row (in logit order), when the set wrote them."""
        classes = self.provenance.get("logit_classes")
        return [str(c) for c in classes] if isinstance(classes, list) and classes else None

    def check(self, expected: Mapping[str, Any]) -> None:
        """Refuse a file made with another config; the message names the differing keys."""
        check_provenance(self.provenance, expected, str(self.path))

    def _rows(self, name: str, a: int | None = None, b: int | None = None) -> np.ndarray:
        src = self._maps.get(name)
        if src is None:
            ds = self._ds[name]
            out = ds[()] if a is None else ds[a:b]
        else:
            out = src if a is None else src[a:b]
        return out.view(np.bool_) if name == "mask" else out

    def clip(self, clip_id: str) -> ClipFeatures:
        try:
            i = self._index[clip_id]
        except KeyError:
            raise KeyError(f"clip {clip_id!r} is not in {self.path}") from None
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return ClipFeatures(
            clip_id,
            self._rows("values", a, b),
            self._rows("timestamps", a, b),
            self._rows("mask", a, b),
            self.status[i],
            self.message[i],
            json.loads(self.info[i]),
        )

    def load_all(self) -> RaggedArrays:
        """Every row, one read per array (or none with ``mmap=True``): the fast path for training."""
        return RaggedArrays(
            self._rows("values"),
            self.offsets.copy(),
            list(self.clip_ids),
            self._rows("timestamps"),
            self._rows("mask"),
            list(self.status),
            list(self.message),
        )

    def iter_clips(self) -> Iterator[ClipFeatures]:
        for cid in self.clip_ids:
            yield self.clip(cid)

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.status:
            counts[s] = counts.get(s, 0) + 1
        return counts


def verify_file(path: str | os.PathLike[str]) -> list[str] | None:
    """Damaged clip ids of a feature file (``FeatureFile.verify``); unreadable: DamagedFileError."""
    try:
        with FeatureFile(path) as ff:
            return ff.verify()
    except (DamagedFileError, FileNotFoundError, MissingFeatureFileError):
        raise
    except (OSError, KeyError, ValueError, UserError) as e:
        raise DamagedFileError(
            f"{path} cannot be read ({e}); delete it and rerun the extraction"
        ) from None
