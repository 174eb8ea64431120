"""Writing feature files: ``FeatureWriter`` (resumable shards, consolidation, repair) and ``write_clips``."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from avemo.data.store.files import atomic_replace, check_room, disk_full, fsync_path, stall
from avemo.data.store.format import LOCKING, ClipFeatures, canonical, clip_digest, is_utf8
from avemo.data.store.provenance import check_provenance, read_provenance, write_attrs
from avemo.data.store.reader import decode_strings, open_h5, read_info, verify_file
from avemo.errors import DamagedFileError, is_disk_full

_STR = h5py.string_dtype("utf-8")
_COPY_BUFFER_BYTES = 64 << 20  # consolidation streams through buffers of about this size
_SHARD_BYTES = 256 << 20  # a shard is committed at this size even before shard_clips clips
# Shards go straight to disk while it has twice their size plus this; nearer full they are built
# in memory first (0.3 s more per 241 MB shard here), so ENOSPC never hits HDF5 mid-file
_ROOM_MARGIN = 64 << 20

# ----------------------------------------------------------------------------- one whole file


def _chunk_rows(row_bytes: int, rows: int) -> int:
    return max(1, min(rows, (1 << 20) // max(1, row_bytes)))  # ~1 MiB chunks


def _create(
    f: h5py.File, name: str, shape: tuple, dtype: Any, compression: str | None = None
) -> h5py.Dataset:
    """Contiguous (memory-mappable) unless compression is asked for, which needs chunks."""
    if compression is None or shape[0] == 0:
        return f.create_dataset(name, shape=shape, dtype=dtype)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    chunks = (_chunk_rows(row_bytes, shape[0]), *shape[1:])
    return f.create_dataset(
        name,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        compression=compression,
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


def _storable(message: str) -> str:
    """HDF5 UTF-8 strings hold neither NUL nor lone surrogates, and an error message may carry
    both (a decoder's output, a non-UTF-8 file name): NUL becomes U+FFFD, a surrogate ``\\udcxx``."""
    message = message.replace("\x00", "\ufffd")
    return message if is_utf8(message) else message.encode("utf-8", "backslashreplace").decode()


def _write_clip_arrays(
    f: h5py.File,
    ids: list[str],
    offsets: np.ndarray,
    status: list[str],
    message: list[str],
    info: list[str] | None,
    digests: list[int],
) -> None:
    f.create_dataset("crc32", data=np.asarray(digests, np.uint32))
    f.create_dataset("offsets", data=offsets)
    f.create_dataset("clip_ids", data=ids, dtype=_STR)
    f.create_dataset("status", data=status, dtype=_STR)
    f.create_dataset("message", data=[_storable(m) for m in message], dtype=_STR)
    if info is not None and any(i != "{}" for i in info):  # optional: older files lack it
        f.create_dataset("info", data=[_storable(i) for i in info], dtype=_STR)


def _write_ragged(
    path: Path | io.BytesIO,
    clips: Iterable[ClipFeatures],
    provenance: Mapping[str, Any],
    compression: str | None = None,
) -> int:
    """Write clips as one CSR file at ``path`` (not atomic by itself), one write per array."""
    clips = list(clips)
    row_shape, dtype = _row_layout(clips, provenance)
    offsets = np.zeros(len(clips) + 1, np.int64)
    np.cumsum([len(c.values) for c in clips], out=offsets[1:])
    rows = int(offsets[-1])
    full = [c for c in clips if len(c.values)]
    with h5py.File(
        path, "w", **({} if isinstance(path, io.BytesIO) else {"locking": LOCKING})
    ) as f:
        write_attrs(f, provenance, row_shape)
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
            stall()
        digests = [
            clip_digest(
                np.asarray(c.values, dtype).reshape(-1, *row_shape), c.timestamps, c.mask, c.status
            )
            for c in clips
        ]
        _write_clip_arrays(
            f,
            [c.clip_id for c in clips],
            offsets,
            [c.status for c in clips],
            [c.message for c in clips],
            [canonical(c.info) for c in clips],
            digests,
        )
    return len(clips)


# ----------------------------------------------------------------------------- resumable shards


def _write_shard(
    path: Path, clips: list[ClipFeatures], provenance: Mapping[str, Any], compression: str | None
) -> None:
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
        stall()  # the half-written shard the kill tests aim at
        fh.write(data[half:])
    data.release()


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
            with open_h5(self.path) as f:
                check_provenance(read_provenance(f), self.provenance, str(self.path))
                if f["values"].shape[0]:
                    self._row_shape = tuple(f["values"].shape[1:])
        prov_file = self.shard_dir / "provenance.json"
        if prov_file.exists():
            check_provenance(
                json.loads(prov_file.read_text()), self.provenance, str(self.shard_dir)
            )
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
            fsync_path(tmp)
            try:
                os.link(tmp, prov_file)
                fsync_path(self.shard_dir)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        check_provenance(json.loads(prov_file.read_text()), self.provenance, str(self.shard_dir))
        self._dir_checked = True

    def _ids(self, p: Path) -> list[str]:
        if p not in self._ids_cache or p == self.path:
            with open_h5(p) as f:
                self._ids_cache[p] = decode_strings(f["clip_ids"])
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
            atomic_replace(tmp, final)
        except (OSError, RuntimeError) as e:  # HDF5 reports a failed write as either
            tmp.unlink(missing_ok=True)
            if is_disk_full(e):
                raise disk_full(
                    tmp, self._buffer_bytes, f"a shard of {len(self._buffer)} clip(s)"
                ) from None
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
            check_room(self.tmp_path, need, "the consolidated file")
            try:
                self._consolidate(ids, where)
                atomic_replace(self.tmp_path, self.path)
            except (OSError, RuntimeError) as e:  # HDF5 reports a failed write as either
                self.tmp_path.unlink(missing_ok=True)
                if is_disk_full(e):
                    raise disk_full(self.tmp_path, need, "the consolidated file") from None
                raise
        if not unchanged:
            stall()  # final file in place, shards not yet deleted (test hook)
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
        self._consolidate(
            [c for c in ids if c not in drop],
            {c: (self.path, i) for i, c in enumerate(ids) if c not in drop},
        )
        atomic_replace(self.tmp_path, self.path)
        self._ids_cache.pop(self.path, None)

    def final_status(self) -> dict[str, str]:
        """Clip id -> status in the final file (empty when there is none yet)."""
        if not self.path.exists():
            return {}
        with open_h5(self.path) as f:
            return dict(
                zip(decode_strings(f["clip_ids"]), decode_strings(f["status"]), strict=True)
            )

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
        handles = {p: open_h5(p) for p in dict.fromkeys(p for p, _ in where.values())}
        try:
            for p, h in handles.items():  # never mix: every source must carry our config hash
                have = read_provenance(h)
                if have.get("config_hash") != self.provenance.get("config_hash"):
                    check_provenance(have, self.provenance, str(p))
            offs = {p: h["offsets"][()] for p, h in handles.items()}
            src_crc = {p: h["crc32"][()] if "crc32" in h else None for p, h in handles.items()}
            status = {p: decode_strings(h["status"]) for p, h in handles.items()}
            message = {p: decode_strings(h["message"]) for p, h in handles.items()}
            info = {p: read_info(h, len(status[p])) for p, h in handles.items()}
            filled = {p: h for p, h in handles.items() if h["values"].shape[0]}
            shapes = {tuple(h["values"].shape[1:]) for h in filled.values()}
            if len(shapes) > 1:
                raise ValueError(
                    f"shards of {self.path.name} have different row shapes: {sorted(shapes)}"
                )
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
            lengths = np.array(
                [offs[p][i + 1] - offs[p][i] for p, i in (where[c] for c in ids)], np.int64
            )
            offsets = np.zeros(len(ids) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            rows = int(offsets[-1])
            row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize + 9)
            with h5py.File(self.tmp_path, "w", locking=LOCKING) as out:
                write_attrs(out, self.provenance, row_shape)
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
                empty = {
                    k: np.zeros((0, *(row_shape if k == "values" else ())), d.dtype)
                    for k, d in dst.items()
                }
                for p, i0, i1 in runs:
                    a, b = int(offs[p][i0]), int(offs[p][i1])
                    ref = src_crc[p]  # None: the source file keeps no per-clip CRCs
                    out_status.extend(status[p][i0:i1])
                    out_message.extend(message[p][i0:i1])
                    out_info.extend(info[p][i0:i1])
                    chunk = {k: handles[p][k][a:b] for k in dst} if b > a else empty
                    for i in range(i0, i1):  # every clip is checked as it is copied
                        lo, hi = int(offs[p][i]) - a, int(offs[p][i + 1]) - a
                        v, t, m = (chunk[k][lo:hi] for k in ("values", "timestamps", "mask"))
                        crc = clip_digest(v, t, m, status[p][i])
                        if ref is not None and crc != int(ref[i]):
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
                    raise DamagedFileError(
                        "; ".join(
                            f"{p} is damaged: {len(c)} clip(s) no longer match their checksums "
                            f"({', '.join(c[:5])}{' ...' if len(c) > 5 else ''})"
                            for p, c in damaged.items()
                        )
                        + ". Delete the damaged file(s) and rerun the same command: those clips are "
                        "extracted again"
                    )
                spill()
                out.flush()
                stall()
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
    atomic_replace(tmp, path)
    return path
