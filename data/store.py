"""The HDF5 feature store: ragged (CSR) arrays per feature set, crash-safe shards, provenance.

One dataset per array (``values``, ``offsets``, ``clip_ids``, ``timestamps``, ``mask``,
``status``, ``message``) instead of one group per clip: reads are ~10x faster and a whole
feature set loads with one read per array. Extraction writes shards under a temporary name and
renames them into place only when complete, so a killed run never leaves a corrupt file and a
rerun resumes from the committed shards.

Layout: row arrays are stored *contiguous* and uncompressed by default. Every file here is
written once with known sizes (shards and the consolidated file alike), so chunking buys
nothing, while a contiguous dataset is read with one ``pread`` and can be memory-mapped
(``FeatureFile(path, mmap=True)``). Pass ``compression="gzip"|"lzf"`` (e.g. for uint8 face
crops) to get chunked, compressed datasets instead; those load with one read per array but
cannot be memory-mapped.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from avemo.errors import DamagedFileError, DiskFullError, UserError, is_disk_full

FORMAT_VERSION = 1
STATUSES = ("ok", "no_face", "no_audio", "no_video", "missing", "error")
# ``missing``: the media file the manifest names is not there (moved or deleted after the
# manifest was written); a rerun extracts the clip again once the file is back.
# The clip has no media for this modality at all (no path in the manifest, no audio stream):
# a missing modality, which stage two masks, unlike ``error`` (a fault) or ``no_face``.
MISSING_MODALITY = ("no_audio", "no_video")
PROVENANCE_KEYS = ("feature_set", "config", "weights")  # what must match to mix shards
ROW_ARRAYS = ("values", "timestamps", "mask")
CLIP_ARRAYS = ("offsets", "clip_ids", "status", "message")
_STR = h5py.string_dtype("utf-8")
_COPY_BUFFER_BYTES = 64 << 20  # consolidation streams through buffers of about this size
_SHARD_BYTES = 256 << 20  # a shard is committed at this size even before shard_clips clips
# Shards go straight to disk while it has twice their size plus this; nearer full they are built
# in memory first (0.3 s more per 241 MB shard here), so ENOSPC never hits HDF5 mid-file
_ROOM_MARGIN = 64 << 20
# Every file is written once under a temporary name and never opened for writing by two
# processes, so HDF5's own file locks add nothing; "best-effort" keeps them where the
# filesystem has them and avoids "unable to lock file" on NFS / Lustre cluster scratch.
_LOCKING = "best-effort"
# Test hook: seconds to stall inside every shard / final-file write, while the ``.tmp`` file is
# half written, so the kill-and-resume test can SIGKILL a real run exactly there on a busy
# machine (those windows last microseconds otherwise). Changes no output; unset in real runs.
_SLOW_WRITE_S = float(os.environ.get("AVEMO_TEST_SLOW_WRITE", 0) or 0)


def _stall() -> None:
    if _SLOW_WRITE_S > 0:
        time.sleep(_SLOW_WRITE_S)


class ConfigMismatchError(UserError, RuntimeError):
    """Cached features were made with another config than the one asked for."""


class FeatureFileError(UserError, ValueError):
    """A path that is not a readable avemo feature file (truncated, foreign, older format)."""


class MissingFeatureFileError(UserError, FileNotFoundError):
    """A feature file path that does not exist (the message says which command makes it)."""


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
        if "\x00" in self.clip_id or not _is_utf8(self.clip_id):
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


# ----------------------------------------------------------------------------- provenance


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def clip_digest(values: np.ndarray, timestamps: np.ndarray, mask: np.ndarray, status: str) -> int:
    """CRC-32 of one clip as stored (value bytes, float64 times, uint8 mask, status).

    Kept per clip in the ``crc32`` array, so damage on disk (a block of zeros, a bad sector) is
    found clip by clip and only those clips are rebuilt; CRC-32 runs at memory speed, so a
    whole file is checked for about the cost of reading it.
    """
    crc = zlib.crc32(np.ascontiguousarray(values).view(np.uint8).reshape(-1))
    crc = zlib.crc32(np.ascontiguousarray(timestamps, np.float64).view(np.uint8), crc)
    crc = zlib.crc32(np.ascontiguousarray(mask).astype(np.uint8, copy=False), crc)
    return zlib.crc32(status.encode(), crc)


def config_hash(provenance: Mapping[str, Any]) -> str:
    """Hash of what decides the numbers: feature-set name, extractor config, weight checksums."""
    core = {k: provenance.get(k) for k in PROVENANCE_KEYS}
    return hashlib.sha256(_canonical(core).encode()).hexdigest()[:16]


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list | tuple):
        return {prefix: json.loads(_canonical(list(obj)))}
    return {prefix: obj}


def diff_provenance(have: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two provenances, limited to what must match.

    Nested config keys are reported dotted (``config.stft.n_fft``), weights by name
    (``weights.onet``).
    """
    a = _flatten({k: have.get(k) for k in PROVENANCE_KEYS})
    b = _flatten({k: want.get(k) for k in PROVENANCE_KEYS})
    lines = []
    for key in sorted(set(a) | set(b)):
        if json.loads(_canonical(a.get(key))) != json.loads(_canonical(b.get(key))):
            lines.append(f"{key}: cached {a.get(key, '<absent>')!r} != requested {b.get(key, '<absent>')!r}")
    return lines


def expectation_diffs(have: Mapping[str, Any], expect: Mapping[str, Any]) -> list[str]:
    """Differences between a file's provenance and a run config's *partial* expectation.

    ``expect`` may give ``config_hash`` and/or provenance keys (``feature_set``, ``weights``,
    ``config``); a partial ``config`` checks only the keys it names, so a training config can
    pin what matters to it without repeating the whole extractor config.
    """
    expect = dict(expect)
    want_hash = expect.pop("config_hash", None)
    if want_hash is not None and str(have.get("config_hash")) != str(want_hash):
        return [f"config_hash: cached {have.get('config_hash')!r} != requested {want_hash!r}"]
    want = {k: have.get(k) for k in PROVENANCE_KEYS}
    for k, v in expect.items():
        if k == "config" and isinstance(v, Mapping) and isinstance(want["config"], Mapping):
            want["config"] = {**want["config"], **v}
        else:
            want[k] = v
    return diff_provenance(have, want)


def check_provenance(have: Mapping[str, Any], want: Mapping[str, Any], where: str) -> None:
    diffs = diff_provenance(have, want)
    if diffs:
        raise ConfigMismatchError(
            f"{where} was made with another config; differing keys:\n  "
            + "\n  ".join(diffs)
            + "\nUse another output folder, pass --new-on-mismatch (writes <set>-<hash>.h5), "
            "or delete the cached file."
        )


def make_provenance(
    feature_set: str,
    config: Mapping[str, Any],
    weights: Mapping[str, str] | None = None,
    rate_hz: float | None = None,
    versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Provenance record written into every shard and final file."""
    from avemo import __version__

    prov: dict[str, Any] = {
        "feature_set": feature_set,
        "config": json.loads(_canonical(dict(config))),
        "weights": dict(weights or {}),
        "rate_hz": rate_hz,
        "versions": {"avemo": __version__, **dict(versions or {})},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    prov["config_hash"] = config_hash(prov)
    return prov


# ----------------------------------------------------------------------------- low-level I/O


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_replace(tmp: Path, final: Path) -> None:
    """fsync the data, rename over ``final``, fsync the folder: all or nothing, even on power loss."""
    _fsync_path(tmp)
    os.replace(tmp, final)
    _fsync_path(final.parent)


def _chunk_rows(row_bytes: int, rows: int) -> int:
    return max(1, min(rows, (1 << 20) // max(1, row_bytes)))  # ~1 MiB chunks


def _create(f: h5py.File, name: str, shape: tuple, dtype: Any, compression: str | None = None) -> h5py.Dataset:
    """Contiguous (memory-mappable) unless compression is asked for, which needs chunks."""
    if compression is None or shape[0] == 0:
        return f.create_dataset(name, shape=shape, dtype=dtype)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    chunks = (_chunk_rows(row_bytes, shape[0]), *shape[1:])
    return f.create_dataset(
        name, shape=shape, dtype=dtype, chunks=chunks, compression=compression,
        shuffle=compression == "gzip",
    )


def _row_layout(
    clips: list[ClipFeatures], provenance: Mapping[str, Any]
) -> tuple[tuple[int, ...], np.dtype]:
    """Row shape and dtype of a feature file: decided by the clips that have rows.

    Empty clips (errors) may carry any row shape, e.g. ``()`` from a runner that never saw a
    good clip; they take the file's.
    """
    shapes = {tuple(c.values.shape[1:]) for c in clips if len(c.values)}
    if len(shapes) > 1:
        raise ValueError(f"clips of one feature set have different row shapes: {sorted(shapes)}")
    if not shapes:
        shapes = {tuple(c.values.shape[1:]) for c in clips}
        shapes = shapes if len(shapes) == 1 else set()
    row_shape = shapes.pop() if shapes else tuple(provenance.get("row_shape") or ())
    dtypes = [c.values.dtype for c in clips if len(c.values)] or [c.values.dtype for c in clips[:1]]
    dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.float32)
    return row_shape, dtype


def _write_attrs(f: h5py.File, provenance: Mapping[str, Any], row_shape: tuple) -> None:
    f.attrs["format_version"] = FORMAT_VERSION
    for key, value in provenance.items():
        if key not in ("format_version", "row_shape"):
            f.attrs[key] = value if isinstance(value, str) else _canonical(value)
    f.attrs["row_shape"] = json.dumps(list(row_shape))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(message: str) -> str:
    """HDF5 UTF-8 strings hold neither NUL nor lone surrogates, and an error message may carry
    both (a decoder's output, a non-UTF-8 file name): NUL becomes U+FFFD, a surrogate ``\\udcxx``."""
    message = message.replace("\x00", "\ufffd")
    return message if _is_utf8(message) else message.encode("utf-8", "backslashreplace").decode()


def _write_clip_arrays(f: h5py.File, ids: list[str], offsets: np.ndarray, status: list[str],
                       message: list[str], info: list[str] | None, digests: list[int]) -> None:
    f.create_dataset("crc32", data=np.asarray(digests, np.uint32))
    f.create_dataset("offsets", data=offsets)
    f.create_dataset("clip_ids", data=ids, dtype=_STR)
    f.create_dataset("status", data=status, dtype=_STR)
    f.create_dataset("message", data=[_storable(m) for m in message], dtype=_STR)
    if info is not None and any(i != "{}" for i in info):  # optional: older files lack it
        f.create_dataset("info", data=[_storable(i) for i in info], dtype=_STR)


def _info(h: h5py.File, n: int) -> list[str]:
    """Per-clip JSON info strings (``{}`` for files written without them)."""
    return _decode(h["info"]) if "info" in h else ["{}"] * n


def _write_ragged(path: Path | io.BytesIO, clips: Iterable[ClipFeatures], provenance: Mapping[str, Any],
                  compression: str | None = None) -> int:
    """Write clips as one CSR file at ``path`` (not atomic by itself), one write per array."""
    clips = list(clips)
    row_shape, dtype = _row_layout(clips, provenance)
    offsets = np.zeros(len(clips) + 1, np.int64)
    np.cumsum([len(c.values) for c in clips], out=offsets[1:])
    rows = int(offsets[-1])
    full = [c for c in clips if len(c.values)]
    with h5py.File(path, "w", **({} if isinstance(path, io.BytesIO) else {"locking": _LOCKING})) as f:
        _write_attrs(f, provenance, row_shape)
        vals = _create(f, "values", (rows, *row_shape), dtype, compression)
        ts = _create(f, "timestamps", (rows,), np.float64, compression)
        mk = _create(f, "mask", (rows,), np.uint8, compression)
        if rows and sum(c.values.nbytes for c in full) <= _COPY_BUFFER_BYTES:  # one write each
            vals[...] = np.concatenate([c.values for c in full]).astype(dtype, copy=False)
            ts[...] = np.concatenate([np.asarray(c.timestamps, np.float64) for c in full])
            mk[...] = np.concatenate([np.asarray(c.mask, bool) for c in full]).view(np.uint8)
        elif rows:  # large (e.g. face crops): clip by clip, no second copy in memory
            for i, c in enumerate(clips):
                a, b = int(offsets[i]), int(offsets[i + 1])
                if b > a:
                    vals[a:b] = c.values
                    ts[a:b] = c.timestamps
                    mk[a:b] = np.asarray(c.mask, bool).view(np.uint8)
        f.flush()
        if not isinstance(path, io.BytesIO):  # (a shard stalls in _write_shard)
            _stall()
        digests = [clip_digest(np.asarray(c.values, dtype).reshape(-1, *row_shape), c.timestamps,
                               c.mask, c.status) for c in clips]
        _write_clip_arrays(f, [c.clip_id for c in clips], offsets, [c.status for c in clips],
                           [c.message for c in clips], [_canonical(c.info) for c in clips], digests)
    return len(clips)


def read_provenance(f: h5py.File) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def _decode(arr: Any) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in arr[()]]


def _open(path: Path) -> h5py.File:
    """Open a feature file or shard, turning HDF5's errors into one clear message."""
    try:
        f = h5py.File(path, "r", locking=_LOCKING)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise FeatureFileError(f"{path} is not a readable HDF5 feature file ({e})") from None
    missing = [k for k in (*ROW_ARRAYS, *CLIP_ARRAYS) if k not in f]
    if missing:
        f.close()
        raise FeatureFileError(f"{path} is not an avemo feature file: it lacks {missing}")
    return f


def _memmap(ds: h5py.Dataset, path: Path) -> np.ndarray | None:
    """A read-only memmap of a contiguous, uncompressed, allocated dataset; None otherwise."""
    if ds.chunks is not None or ds.compression is not None or ds.size == 0:
        return None
    offset = ds.id.get_offset()
    if offset is None:
        return None
    return np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)


# ----------------------------------------------------------------------------- reader


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
                f"feature file {self.path} does not exist (run `avemo features`)")
        self._f = _open(self.path)
        self.provenance = read_provenance(self._f)
        self.offsets = self._f["offsets"][()]
        self.clip_ids = _decode(self._f["clip_ids"])
        self.status = _decode(self._f["status"])
        self.message = _decode(self._f["message"])
        self.info = _info(self._f, len(self.clip_ids))
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
            raise DamagedFileError(f"{self.path} is damaged: {len(want)} checksums for "
                                   f"{len(self.clip_ids)} clips; delete it and rerun the extraction")
        bad = []
        for i, cid in enumerate(self.clip_ids):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            if not 0 <= a <= b <= self.n_rows:
                bad.append(cid)
                continue
            got = clip_digest(self._rows("values", a, b), self._rows("timestamps", a, b),
                              self._rows("mask", a, b), self.status[i])
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
        raise DamagedFileError(f"{path} cannot be read ({e}); delete it and rerun the extraction") from None


def describe(path: str | os.PathLike[str]) -> str:
    """What ``avemo inspect`` prints: provenance, shapes, per-status clip counts."""
    with FeatureFile(path) as ff:
        p = ff.provenance
        vals = ff._f["values"]
        layout = "contiguous" if vals.chunks is None else f"chunked {vals.compression or ''}".strip()
        lines = [
            f"file         {ff.path}  ({ff.path.stat().st_size / 1e6:.1f} MB, {layout})",
            f"feature set  {p.get('feature_set')}",
            f"config hash  {p.get('config_hash')}",
            f"created      {p.get('created')}",
            f"clips        {len(ff)}",
            f"rows         {ff.n_rows}   row shape {list(ff.row_shape)}   dtype {ff.dtype}",
            f"rate (Hz)    {p.get('rate_hz')}",
        ]
        if ff.logit_classes:
            n = len(ff.logit_classes)
            lines.append(f"logits       last {n} columns, classes in order: {', '.join(ff.logit_classes)}")
        lines.append("status       " + ", ".join(f"{k}={v}" for k, v in sorted(ff.status_counts().items())))
        if ff.n_rows:
            lines.append(f"valid rows   {int(ff._f['mask'][()].sum())} / {ff.n_rows}")
        subj = [json.loads(i) for i in ff.info]
        subj = [d for d in subj if "subject_frames" in d]
        if subj:
            frames = sum(d["frames"] for d in subj)
            lines.append(
                f"subject      {sum(d['subject_frames'] for d in subj)} / {frames} frames; tracks per clip "
                f"max {max(d['tracks'] for d in subj)}; longest gap max "
                f"{max(d['longest_gap_s'] for d in subj):.2f} s (per clip: --montage CLIP -o PNG)"
            )
        lines.append("config       " + json.dumps(p.get("config"), sort_keys=True))
        lines.append("weights      " + json.dumps(p.get("weights"), sort_keys=True))
        lines.append("versions     " + json.dumps(p.get("versions"), sort_keys=True))
        bad = [(c, s, m) for c, s, m in zip(ff.clip_ids, ff.status, ff.message, strict=True) if s != "ok"]
        for c, s, m in bad[:10]:
            lines.append(f"  {s:<9} {c}: {m}")
        if len(bad) > 10:
            lines.append(f"  ... and {len(bad) - 10} more non-ok clips")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- writer


def _write_shard(path: Path, clips: list[ClipFeatures], provenance: Mapping[str, Any],
                 compression: str | None) -> None:
    """A shard built in memory (at most ``_SHARD_BYTES``), then written with plain file I/O:
    on a nearly full disk ENOSPC is then a clean ``OSError`` here, never HDF5 failing mid-file
    (which leaves the library in a state that can crash the interpreter at exit)."""
    image = io.BytesIO()
    _write_ragged(image, clips, provenance, compression)
    data = image.getbuffer()
    with open(path, "wb") as fh:
        half = len(data) // 2
        fh.write(data[:half])
        fh.flush()
        _stall()  # the half-written shard the kill tests aim at
        fh.write(data[half:])
    data.release()


def _check_room(path: Path, need_bytes: int, what: str) -> None:
    """Refuse before writing when the filesystem plainly lacks the room."""
    if shutil.disk_usage(path.parent).free < need_bytes:
        raise disk_full(path, need_bytes, what)


def disk_full(path: Path, need_bytes: int, what: str) -> DiskFullError:
    """The one message for ENOSPC: where, how much is free, about how much this step needs."""
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    e = DiskFullError(
        f"disk full writing {path}: {free / 1e6:.1f} MB free on its filesystem, {what} needs about "
        f"{need_bytes / 1e6:.1f} MB; free space or write elsewhere (-o), then rerun the same "
        "command: committed clips are kept and it resumes after them")
    e.errno, e.filename = errno.ENOSPC, str(path)
    return e


class FeatureWriter:
    """Crash-safe, resumable writer of one feature set.

    Clips are buffered and written as shard files ``<out>.shards/shard-r<rank>-<n>.h5`` of
    ``shard_clips`` clips (or 256 MiB, whichever comes first): each is written under ``.tmp``,
    fsynced, then renamed, so a shard on disk is always complete.
    ``finalize`` consolidates the shards (and any earlier final file) into ``<out>`` the same way,
    then deletes the shards. Whatever moment the process dies at, ``<out>`` is either absent,
    the previous complete file, or the new complete file; a rerun resumes from what is committed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        provenance: Mapping[str, Any],
        shard_clips: int = 32,
        rank: int = 0,
        compression: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.provenance = dict(provenance)
        self.shard_clips = max(1, int(shard_clips))
        self.rank = rank
        self.compression = compression
        self.shard_dir = self.path.with_name(self.path.name + ".shards")
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self._buffer: list[ClipFeatures] = []
        self._buffer_bytes = 0
        self._ids_cache: dict[Path, list[str]] = {}  # committed files never change: read once
        self._row_shape: tuple[int, ...] | None = None
        self._dir_checked = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with _open(self.path) as f:
                check_provenance(read_provenance(f), self.provenance, str(self.path))
                if f["values"].shape[0]:
                    self._row_shape = tuple(f["values"].shape[1:])
        prov_file = self.shard_dir / "provenance.json"
        if prov_file.exists():
            check_provenance(json.loads(prov_file.read_text()), self.provenance, str(self.shard_dir))
        if self.shard_dir.exists():
            for stale in self.shard_dir.glob(f"shard-r{rank}-*.h5.tmp"):
                stale.unlink(missing_ok=True)  # an interrupted shard write: its clips are redone
        if rank == 0:
            self.tmp_path.unlink(missing_ok=True)  # an interrupted consolidation
        self._next = 1 + max((self._shard_no(p) for p in self._shards(rank)), default=0)

    # -- shards ---------------------------------------------------------------------------

    def _shards(self, rank: int | None = None) -> list[Path]:
        if not self.shard_dir.exists():
            return []
        pattern = "shard-r*-*.h5" if rank is None else f"shard-r{rank}-*.h5"
        return sorted(self.shard_dir.glob(pattern))

    @staticmethod
    def _shard_no(p: Path) -> int:
        return int(p.stem.rsplit("-", 1)[1])

    def _ensure_shard_dir(self) -> None:
        """Created on the first commit only, so a rank with nothing to do leaves no trace."""
        if self._dir_checked:
            return
        self.shard_dir.mkdir(exist_ok=True)
        prov_file = self.shard_dir / "provenance.json"
        if not prov_file.exists():
            # create-if-absent atomically (link fails when another rank won the race), so two
            # ranks started with different configs can never both claim the folder
            tmp = prov_file.with_name(f"provenance.json.tmp-r{self.rank}")
            tmp.write_text(json.dumps(self.provenance, indent=1, sort_keys=True))
            _fsync_path(tmp)
            try:
                os.link(tmp, prov_file)
                _fsync_path(self.shard_dir)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        check_provenance(json.loads(prov_file.read_text()), self.provenance, str(self.shard_dir))
        self._dir_checked = True

    def _ids(self, p: Path) -> list[str]:
        if p not in self._ids_cache or p == self.path:
            with _open(p) as f:
                self._ids_cache[p] = _decode(f["clip_ids"])
        return self._ids_cache[p]

    def committed(self) -> set[str]:
        """Clip ids on disk: in the final file or in any rank's renamed shard."""
        for _ in range(5):  # rank 0 may be consolidating (deleting shards) while we look
            try:
                ids: set[str] = set()
                for p in ([self.path] if self.path.exists() else []) + self._shards():
                    ids.update(self._ids(p))
                return ids
            except FileNotFoundError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.shard_dir} keeps changing while being read")

    def done(self) -> set[str]:
        """Clip ids already committed, plus those buffered in this writer."""
        return self.committed() | {c.clip_id for c in self._buffer}

    def add(self, clip: ClipFeatures) -> None:
        if len(clip.values):
            shape = tuple(clip.values.shape[1:])
            if self._row_shape is None:
                self._row_shape = shape
            elif shape != self._row_shape:
                raise ValueError(
                    f"clip {clip.clip_id}: row shape {list(shape)} differs from the feature set's "
                    f"{list(self._row_shape)} ({self.path.name})"
                )
        self._buffer.append(clip)
        self._buffer_bytes += clip.values.nbytes
        if len(self._buffer) >= self.shard_clips or self._buffer_bytes >= _SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered clips as one shard (atomic)."""
        if not self._buffer:
            return
        final = self.shard_dir / f"shard-r{self.rank}-{self._next:06d}.h5"
        tmp = final.with_name(final.name + ".tmp")
        prov = {**self.provenance, "row_shape": list(self._row_shape or ())}
        try:
            self._ensure_shard_dir()
            if shutil.disk_usage(self.shard_dir).free > 2 * self._buffer_bytes + _ROOM_MARGIN:
                _write_ragged(tmp, self._buffer, prov, self.compression)  # plenty of room: direct
            else:  # near full: built in memory, so a full disk is a clean OSError
                _write_shard(tmp, self._buffer, prov, self.compression)
            _atomic_replace(tmp, final)
        except (OSError, RuntimeError) as e:  # HDF5 reports a failed write as either
            tmp.unlink(missing_ok=True)
            if is_disk_full(e):
                raise disk_full(tmp, self._buffer_bytes, f"a shard of {len(self._buffer)} clip(s)") from None
            raise
        self._next += 1
        self._buffer = []
        self._buffer_bytes = 0

    # -- consolidation --------------------------------------------------------------------

    def finalize(self, order: list[str] | None = None) -> Path:
        """Consolidate every committed shard into the final file (atomically), then drop shards.

        ``order`` (manifest order) fixes the clip order, so the file is identical whatever the
        batch or shard sizes, rank count or interruptions were; clips not in ``order`` follow,
        sorted by id. When nothing changed the existing file is kept as is.
        """
        self.flush()
        shards = self._shards()
        sources = ([self.path] if self.path.exists() else []) + shards
        where: dict[str, tuple[Path, int]] = {}
        for p in sources:
            for i, cid in enumerate(self._ids(p)):
                where.setdefault(cid, (p, i))  # the final file wins over a duplicate shard
        pos = {cid: i for i, cid in enumerate(order or [])}
        ids = sorted(where, key=lambda c: (pos.get(c, len(pos)), c))
        unchanged = self.path.exists() and not shards and self._ids(self.path) == ids
        if not unchanged:
            # about the sources' size (an upper bound): checked first, as HDF5 failing mid-file
            # on a full disk cannot be recovered from cleanly in the same process
            need = sum(p.stat().st_size for p in dict.fromkeys(p for p, _ in where.values()))
            _check_room(self.tmp_path, need, "the consolidated file")
            try:
                self._consolidate(ids, where)
                _atomic_replace(self.tmp_path, self.path)
            except (OSError, RuntimeError) as e:  # HDF5 reports a failed write as either
                self.tmp_path.unlink(missing_ok=True)
                if is_disk_full(e):
                    raise disk_full(self.tmp_path, need, "the consolidated file") from None
                raise
        if not unchanged:
            _stall()  # final file in place, shards not yet deleted (test hook)
        self._drop_shards()
        return self.path

    def repair(self) -> list[str]:
        """Check the final file's clips against their checksums and rewrite it (atomically)
        without the damaged ones, so this run extracts them again. Returns their ids."""
        if not self.path.exists():
            return []
        bad = verify_file(self.path) or []
        self.discard(bad)
        return bad

    def discard(self, clip_ids: Iterable[str]) -> None:
        """Rewrite the final file (atomically) without these clips, so a run extracts them again."""
        drop = set(clip_ids)
        if not drop or not self.path.exists():
            return
        ids = self._ids(self.path)
        self._consolidate([c for c in ids if c not in drop],
                          {c: (self.path, i) for i, c in enumerate(ids) if c not in drop})
        _atomic_replace(self.tmp_path, self.path)
        self._ids_cache.pop(self.path, None)

    def final_status(self) -> dict[str, str]:
        """Clip id -> status in the final file (empty when there is none yet)."""
        if not self.path.exists():
            return {}
        with _open(self.path) as f:
            return dict(zip(_decode(f["clip_ids"]), _decode(f["status"]), strict=True))

    def _drop_shards(self) -> None:
        if not self.shard_dir.exists():
            return
        for p in self._shards():
            p.unlink(missing_ok=True)
        for p in self.shard_dir.iterdir():  # provenance.json, markers, other ranks' leftovers
            p.unlink(missing_ok=True)
        self.shard_dir.rmdir()
        self._ids_cache = {}

    def _consolidate(self, ids: list[str], where: dict[str, tuple[Path, int]]) -> None:
        """Stream all sources into ``tmp_path`` in ``ids`` order.

        Consecutive clips that sit consecutively in one source are copied as one slice, and
        writes go out in buffers of ~64 MiB, so memory stays bounded and large files copy at
        disk speed.
        """
        handles = {p: _open(p) for p in dict.fromkeys(p for p, _ in where.values())}
        try:
            for p, h in handles.items():  # never mix: every source must carry our config hash
                have = read_provenance(h)
                if have.get("config_hash") != self.provenance.get("config_hash"):
                    check_provenance(have, self.provenance, str(p))
            offs = {p: h["offsets"][()] for p, h in handles.items()}
            src_crc = {p: h["crc32"][()] if "crc32" in h else None for p, h in handles.items()}
            status = {p: _decode(h["status"]) for p, h in handles.items()}
            message = {p: _decode(h["message"]) for p, h in handles.items()}
            info = {p: _info(h, len(status[p])) for p, h in handles.items()}
            filled = {p: h for p, h in handles.items() if h["values"].shape[0]}
            shapes = {tuple(h["values"].shape[1:]) for h in filled.values()}
            if len(shapes) > 1:
                raise ValueError(f"shards of {self.path.name} have different row shapes: {sorted(shapes)}")
            if not shapes:  # only empty clips: trust the sources if they agree
                shapes = {tuple(h["values"].shape[1:]) for h in handles.values()}
                shapes = shapes if len(shapes) == 1 else set()
            row_shape = shapes.pop() if shapes else tuple(self._row_shape or ())
            dtypes = [h["values"].dtype for h in (filled or handles).values()]
            dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.float32)

            runs: list[tuple[Path, int, int]] = []  # (source, first clip, last clip + 1)
            for cid in ids:
                p, i = where[cid]
                if runs and runs[-1][0] == p and runs[-1][2] == i:
                    runs[-1] = (p, runs[-1][1], i + 1)
                else:
                    runs.append((p, i, i + 1))
            lengths = np.array([offs[p][i + 1] - offs[p][i] for p, i in (where[c] for c in ids)], np.int64)
            offsets = np.zeros(len(ids) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            rows = int(offsets[-1])
            row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize + 9)
            with h5py.File(self.tmp_path, "w", locking=_LOCKING) as out:
                _write_attrs(out, self.provenance, row_shape)
                dst = {
                    "values": _create(out, "values", (rows, *row_shape), dtype, self.compression),
                    "timestamps": _create(out, "timestamps", (rows,), np.float64, self.compression),
                    "mask": _create(out, "mask", (rows,), np.uint8, self.compression),
                }
                buf: dict[str, list[np.ndarray]] = {k: [] for k in dst}
                start = cursor = 0

                def spill() -> None:
                    nonlocal start
                    if cursor > start:
                        for k, d in dst.items():
                            d[start:cursor] = np.concatenate(buf[k]).astype(d.dtype, copy=False)
                            buf[k].clear()
                    start = cursor

                out_status: list[str] = []
                out_message: list[str] = []
                out_info: list[str] = []
                out_crc: list[int] = []
                damaged: dict[Path, list[str]] = {}
                empty = {k: np.zeros((0, *(row_shape if k == "values" else ())), d.dtype) for k, d in dst.items()}
                for p, i0, i1 in runs:
                    a, b = int(offs[p][i0]), int(offs[p][i1])
                    out_status.extend(status[p][i0:i1])
                    out_message.extend(message[p][i0:i1])
                    out_info.extend(info[p][i0:i1])
                    chunk = {k: handles[p][k][a:b] for k in dst} if b > a else empty
                    for i in range(i0, i1):  # every clip is checked as it is copied
                        lo, hi = int(offs[p][i]) - a, int(offs[p][i + 1]) - a
                        v, t, m = (chunk[k][lo:hi] for k in ("values", "timestamps", "mask"))
                        crc = clip_digest(v, t, m, status[p][i])
                        if src_crc[p] is not None and crc != int(src_crc[p][i]):
                            damaged.setdefault(p, []).append(self._ids(p)[i])
                        if v.dtype != dtype:
                            crc = clip_digest(v.astype(dtype), t, m, status[p][i])
                        out_crc.append(crc)
                    if b == a:
                        continue
                    for k in dst:
                        buf[k].append(chunk[k])
                    cursor += b - a
                    if (cursor - start) * row_bytes >= _COPY_BUFFER_BYTES:
                        spill()
                if damaged:
                    raise DamagedFileError("; ".join(
                        f"{p} is damaged: {len(c)} clip(s) no longer match their checksums "
                        f"({', '.join(c[:5])}{' ...' if len(c) > 5 else ''})" for p, c in damaged.items())
                        + ". Delete the damaged file(s) and rerun the same command: those clips are "
                        "extracted again")
                spill()
                out.flush()
                _stall()
                _write_clip_arrays(out, ids, offsets, out_status, out_message, out_info, out_crc)
        except BaseException:
            self.tmp_path.unlink(missing_ok=True)  # never leave a half file (or hold the space)
            raise
        finally:
            for h in handles.values():
                h.close()


def write_clips(
    path: str | os.PathLike[str],
    clips: Iterable[ClipFeatures],
    provenance: Mapping[str, Any],
    compression: str | None = None,
) -> Path:
    """Write a complete feature file in one go (tests, generated benchmark features)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    _write_ragged(tmp, clips, provenance, compression)
    _atomic_replace(tmp, path)
    return path
