"""The HDF5 feature store: ragged (CSR) arrays per feature set, crash-safe shards, provenance.

One chunked dataset per array (``values``, ``offsets``, ``clip_ids``, ``timestamps``, ``mask``,
``status``, ``message``) instead of one group per clip: reads are ~10x faster and a whole
feature set loads with one read per array. Extraction writes shards under a temporary name and
renames them into place only when complete, so a killed run never leaves a corrupt file and a
rerun resumes from the committed shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT_VERSION = 1
STATUSES = ("ok", "no_face", "no_audio", "error")
PROVENANCE_KEYS = ("feature_set", "config", "weights")  # what must match to mix shards
_STR = h5py.string_dtype("utf-8")


class ConfigMismatchError(RuntimeError):
    """Cached features were made with another config than the one asked for."""


@dataclass
class ClipFeatures:
    """One clip's rows: ``values [T, ...]``, ``timestamps [T]`` (s), ``mask [T]``, status."""

    clip_id: str
    values: np.ndarray
    timestamps: np.ndarray
    mask: np.ndarray
    status: str = "ok"
    message: str = ""

    def __post_init__(self) -> None:
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
    """Human-readable differences between two provenances, limited to what must match."""
    a = _flatten({k: have.get(k) for k in PROVENANCE_KEYS})
    b = _flatten({k: want.get(k) for k in PROVENANCE_KEYS})
    lines = []
    for key in sorted(set(a) | set(b)):
        if json.loads(_canonical(a.get(key))) != json.loads(_canonical(b.get(key))):
            lines.append(f"{key}: cached {a.get(key, '<absent>')!r} != requested {b.get(key, '<absent>')!r}")
    return lines


def check_provenance(have: Mapping[str, Any], want: Mapping[str, Any], where: str) -> None:
    diffs = diff_provenance(have, want)
    if diffs:
        raise ConfigMismatchError(
            f"{where} was made with another config; differing keys:\n  "
            + "\n  ".join(diffs)
            + "\nUse another output folder / feature-set name, or delete the cached file."
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
    _fsync_path(tmp)
    os.replace(tmp, final)
    _fsync_path(final.parent)


def _chunk_rows(row_bytes: int, rows: int) -> int:
    return max(1, min(rows, (1 << 20) // max(1, row_bytes)))  # ~1 MiB chunks


def _write_ragged(path: Path, clips: Iterable[ClipFeatures], provenance: Mapping[str, Any]) -> int:
    """Write clips as one CSR file at ``path`` (not atomic by itself). Returns clip count."""
    clips = list(clips)
    rows = sum(len(c.values) for c in clips)
    row_shape, dtype = _row_layout(clips, provenance)
    with h5py.File(path, "w") as f:
        _write_attrs(f, provenance, row_shape)
        offsets = np.zeros(len(clips) + 1, np.int64)
        np.cumsum([len(c.values) for c in clips], out=offsets[1:])
        _create(f, "values", (rows, *row_shape), dtype)
        _create(f, "timestamps", (rows,), np.float64)
        _create(f, "mask", (rows,), np.uint8)
        for i, c in enumerate(clips):
            a, b = offsets[i], offsets[i + 1]
            if b > a:
                f["values"][a:b] = c.values
                f["timestamps"][a:b] = c.timestamps
                f["mask"][a:b] = c.mask
        f.create_dataset("offsets", data=offsets)
        f.create_dataset("clip_ids", data=[c.clip_id for c in clips], dtype=_STR)
        f.create_dataset("status", data=[c.status for c in clips], dtype=_STR)
        f.create_dataset("message", data=[c.message for c in clips], dtype=_STR)
    return len(clips)


def _row_layout(clips: list[ClipFeatures], provenance: Mapping[str, Any]) -> tuple[tuple, Any]:
    shapes = {tuple(c.values.shape[1:]) for c in clips if len(c.values)} or {
        tuple(c.values.shape[1:]) for c in clips
    }
    if len(shapes) > 1:
        raise ValueError(f"clips of one feature set have different row shapes: {sorted(shapes)}")
    row_shape = shapes.pop() if shapes else tuple(provenance.get("row_shape") or ())
    dtypes = {c.values.dtype for c in clips if len(c.values)}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.result_type(*dtypes) if dtypes else np.float32
    return row_shape, dtype


def _create(f: h5py.File, name: str, shape: tuple, dtype: Any) -> h5py.Dataset:
    if shape[0] == 0:
        return f.create_dataset(name, shape=shape, dtype=dtype)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    chunks = (_chunk_rows(row_bytes, shape[0]), *shape[1:])
    return f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)


def _write_attrs(f: h5py.File, provenance: Mapping[str, Any], row_shape: tuple) -> None:
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["row_shape"] = json.dumps(list(row_shape))
    for key, value in provenance.items():
        f.attrs[key] = value if isinstance(value, str) else _canonical(value)


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


# ----------------------------------------------------------------------------- reader


class FeatureFile:
    """Read API for stage two: provenance, one clip, or every row at once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"feature file {self.path} does not exist (run `avemo features`)")
        self._f = h5py.File(self.path, "r")
        self.provenance = read_provenance(self._f)
        self.offsets = self._f["offsets"][()]
        self.clip_ids = _decode(self._f["clip_ids"])
        self.status = _decode(self._f["status"])
        self.message = _decode(self._f["message"])
        self._index = {c: i for i, c in enumerate(self.clip_ids)}

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
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self._f["values"].shape[1:])

    @property
    def n_rows(self) -> int:
        return int(self._f["values"].shape[0])

    def check(self, expected: Mapping[str, Any]) -> None:
        """Refuse a file made with another config; the message names the differing keys."""
        check_provenance(self.provenance, expected, str(self.path))

    def clip(self, clip_id: str) -> ClipFeatures:
        try:
            i = self._index[clip_id]
        except KeyError:
            raise KeyError(f"clip {clip_id!r} is not in {self.path}") from None
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return ClipFeatures(
            clip_id,
            self._f["values"][a:b],
            self._f["timestamps"][a:b],
            self._f["mask"][a:b].astype(bool),
            self.status[i],
            self.message[i],
        )

    def load_all(self) -> RaggedArrays:
        """Every row, one read per array (the fast path for training)."""
        return RaggedArrays(
            self._f["values"][()],
            self.offsets.copy(),
            list(self.clip_ids),
            self._f["timestamps"][()],
            self._f["mask"][()].astype(bool),
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


def describe(path: str | os.PathLike[str]) -> str:
    """What ``avemo inspect`` prints: provenance, shapes, per-status clip counts."""
    with FeatureFile(path) as ff:
        p = ff.provenance
        lines = [
            f"file         {ff.path}",
            f"feature set  {p.get('feature_set')}",
            f"config hash  {p.get('config_hash')}",
            f"created      {p.get('created')}",
            f"clips        {len(ff)}",
            f"rows         {ff.n_rows}   row shape {list(ff.row_shape)}   "
            f"dtype {ff._f['values'].dtype}",
            f"rate (Hz)    {p.get('rate_hz')}",
            "status       " + ", ".join(f"{k}={v}" for k, v in sorted(ff.status_counts().items())),
        ]
        if ff.n_rows:
            lines.append(f"valid rows   {int(ff._f['mask'][()].sum())} / {ff.n_rows}")
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


class FeatureWriter:
    """Crash-safe, resumable writer of one feature set.

    Clips are buffered and written as shard files ``<out>.shards/shard-r<rank>-<n>.h5``: each is
    written under ``.tmp``, fsynced, then renamed, so a shard on disk is always complete.
    ``finalize`` consolidates the shards (and any earlier final file) into ``<out>`` the same way.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        provenance: Mapping[str, Any],
        shard_clips: int = 32,
        rank: int = 0,
    ) -> None:
        self.path = Path(path)
        self.provenance = dict(provenance)
        self.shard_clips = shard_clips
        self.rank = rank
        self.shard_dir = self.path.with_name(self.path.name + ".shards")
        self._buffer: list[ClipFeatures] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with h5py.File(self.path, "r") as f:
                check_provenance(read_provenance(f), self.provenance, str(self.path))
        self.shard_dir.mkdir(exist_ok=True)
        prov_file = self.shard_dir / "provenance.json"
        if prov_file.exists():
            check_provenance(json.loads(prov_file.read_text()), self.provenance, str(self.shard_dir))
        elif rank == 0:
            tmp = prov_file.with_suffix(f".json.tmp{os.getpid()}")
            tmp.write_text(json.dumps(self.provenance, indent=1, sort_keys=True))
            _atomic_replace(tmp, prov_file)
        for stale in self.shard_dir.glob(f"shard-r{rank}-*.h5.tmp"):
            stale.unlink()  # an interrupted shard write: its clips are redone
        self._next = 1 + max((self._shard_no(p) for p in self._shards(rank)), default=0)

    def _shards(self, rank: int | None = None) -> list[Path]:
        pattern = "shard-r*-*.h5" if rank is None else f"shard-r{rank}-*.h5"
        return sorted(self.shard_dir.glob(pattern))

    @staticmethod
    def _shard_no(p: Path) -> int:
        return int(p.stem.rsplit("-", 1)[1])

    def done(self) -> set[str]:
        """Clip ids already committed (in the final file or in a renamed shard)."""
        ids: set[str] = set()
        for p in ([self.path] if self.path.exists() else []) + self._shards():
            with h5py.File(p, "r") as f:
                ids.update(_decode(f["clip_ids"]))
        ids.update(c.clip_id for c in self._buffer)
        return ids

    def add(self, clip: ClipFeatures) -> None:
        self._buffer.append(clip)
        if len(self._buffer) >= self.shard_clips:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        final = self.shard_dir / f"shard-r{self.rank}-{self._next:06d}.h5"
        tmp = final.with_name(final.name + ".tmp")
        _write_ragged(tmp, self._buffer, self.provenance)
        _atomic_replace(tmp, final)
        self._next += 1
        self._buffer = []

    def finalize(self, order: list[str] | None = None) -> Path:
        """Consolidate every committed shard into the final file (atomically), then drop shards.

        ``order`` (manifest order) fixes the clip order so reruns give identical files.
        """
        self.flush()
        sources = ([self.path] if self.path.exists() else []) + self._shards()
        if not sources and self.path.exists():
            return self.path
        seen: dict[str, tuple[Path, int]] = {}
        for p in sources:
            with h5py.File(p, "r") as f:
                for i, cid in enumerate(_decode(f["clip_ids"])):
                    seen.setdefault(cid, (p, i))
        rank = {cid: i for i, cid in enumerate(order or [])}
        ids = sorted(seen, key=lambda c: (rank.get(c, len(rank)), c))
        tmp = self.path.with_name(self.path.name + ".tmp")
        self._consolidate(tmp, ids, seen)
        _atomic_replace(tmp, self.path)
        for p in self._shards():
            p.unlink()
        for p in self.shard_dir.iterdir():
            p.unlink()
        self.shard_dir.rmdir()
        return self.path

    def _consolidate(self, tmp: Path, ids: list[str], where: dict[str, tuple[Path, int]]) -> None:
        handles = {p: h5py.File(p, "r") for p, _ in set(where.values())}
        try:
            offs = {p: h["offsets"][()] for p, h in handles.items()}
            lengths = [int(offs[p][i + 1] - offs[p][i]) for p, i in (where[c] for c in ids)]
            offsets = np.zeros(len(ids) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            filled = [h for h in handles.values() if h["values"].shape[0]]
            ref = filled[0] if filled else next(iter(handles.values()), None)
            row_shape = tuple(ref["values"].shape[1:]) if ref is not None else ()
            dtypes = [h["values"].dtype for h in filled]
            dtype = np.result_type(*dtypes) if dtypes else (ref["values"].dtype if ref else np.float32)
            with h5py.File(tmp, "w") as out:
                _write_attrs(out, self.provenance, row_shape)
                rows = int(offsets[-1])
                vals = _create(out, "values", (rows, *row_shape), dtype)
                ts = _create(out, "timestamps", (rows,), np.float64)
                mk = _create(out, "mask", (rows,), np.uint8)
                status, message = [], []
                for k, cid in enumerate(ids):
                    p, i = where[cid]
                    h, o = handles[p], offs[p]
                    a, b = int(o[i]), int(o[i + 1])
                    if b > a:
                        dst = slice(int(offsets[k]), int(offsets[k + 1]))
                        vals[dst] = h["values"][a:b]
                        ts[dst] = h["timestamps"][a:b]
                        mk[dst] = h["mask"][a:b]
                    status.append(h["status"][i])
                    message.append(h["message"][i])
                out.create_dataset("offsets", data=offsets)
                out.create_dataset("clip_ids", data=ids, dtype=_STR)
                out.create_dataset("status", data=[_s(s) for s in status], dtype=_STR)
                out.create_dataset("message", data=[_s(s) for s in message], dtype=_STR)
        finally:
            for h in handles.values():
                h.close()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def write_clips(path: str | os.PathLike[str], clips: Iterable[ClipFeatures], provenance: Mapping[str, Any]) -> Path:
    """Write a complete feature file in one go (tests, generated benchmark features)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    _write_ragged(tmp, clips, provenance)
    _atomic_replace(tmp, path)
    return path
