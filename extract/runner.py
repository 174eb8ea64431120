"""The batched, resumable extraction runner behind ``avemo features``.

Per feature set: skip clips already committed, extract the rest in batches, hand results to
a writer thread (HDF5 I/O overlaps compute), commit shards, consolidate. Under ``torchrun``
(or any launcher setting RANK / WORLD_SIZE) each rank takes every WORLD_SIZE-th clip and writes
its own shards; rank 0 consolidates once every manifest clip is committed by some rank.

Rank 0 decides "the others are finished" from the shards' contents (every manifest clip is
committed), not from "done" marker files: a marker left by an earlier, killed run can then
never trigger a premature consolidation, and a rerun with another world size just works. When
torch.distributed is initialised a barrier is used first. A rank that fails leaves a
``rank-<r>.failed`` marker so rank 0 stops waiting with a clear message instead of timing out.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from avemo.data.manifest import load_manifest
from avemo.data.store import ClipFeatures, ConfigMismatchError, FeatureWriter
from avemo.extract.base import ClipInput, FeatureSet
from avemo.extract.registry import FEATURE_SETS, load_for

DEFAULT_SHARD_CLIPS = 32


def _torch_dist() -> Any | None:
    """torch.distributed when someone (torchrun script, Lightning) initialised it; never imports torch."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def _dist() -> tuple[int, int]:
    dist = _torch_dist()
    if dist is not None:
        return dist.get_rank(), dist.get_world_size()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def clip_inputs(df: pd.DataFrame) -> list[ClipInput]:
    def get(row: Any, col: str) -> str | None:
        v = getattr(row, col, None)
        return None if v is None or pd.isna(v) else str(v)

    return [ClipInput(str(r.clip_id), get(r, "video"), get(r, "audio")) for r in df.itertuples()]


def _error(clip: ClipInput, e: BaseException | str) -> ClipFeatures:
    msg = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    return ClipFeatures.empty(clip.clip_id, (), "error", msg)


def _safe_extract(fs: FeatureSet, batch: Sequence[ClipInput], retry_batch: int = 1
                  ) -> Iterator[ClipFeatures]:
    """Exactly one result per input clip, streamed as they come; a bad clip never stops the run.

    Feature sets should report a bad clip as status ``error`` themselves; if one raises instead,
    the results yielded so far are kept and only the remaining clips are retried, in batches of
    ``retry_batch`` and then one at a time, so the culprit gets status ``error`` with the
    exception as its message. A clip the feature
    set silently skipped is recorded as an error too (else every rerun would retry it).
    """
    pending = {c.clip_id: c for c in batch}

    def take(clips: Sequence[ClipInput]) -> Iterator[ClipFeatures]:
        for res in fs.extract(clips):
            if pending.pop(res.clip_id, None) is not None:
                yield res

    try:
        yield from take(batch)
    except Exception:  # noqa: BLE001 - isolate the bad clip below
        rest = list(pending.values())
        if 1 < retry_batch < len(rest):
            for i in range(0, len(rest), retry_batch):
                for res in _safe_extract(fs, rest[i : i + retry_batch]):
                    pending.pop(res.clip_id, None)
                    yield res
        for clip in list(pending.values()):
            if clip.clip_id in pending:
                try:
                    yield from take([clip])
                except Exception as e:  # noqa: BLE001
                    if pending.pop(clip.clip_id, None) is not None:
                        yield _error(clip, e)
    for clip in pending.values():
        yield _error(clip, f"feature set {fs.name!r} returned no result for this clip")


class _Progress:
    """One stderr line: clips done / total, rows/s (frames/s for video sets), clips/s, clips
    not ok, ETA; redrawn at most every ``every_s`` seconds."""

    def __init__(self, name: str, total: int, enabled: bool, every_s: float = 0.25,
                 unit: str = "rows") -> None:
        self.name, self.total, self.enabled, self.every_s = name, total, enabled, every_s
        self.unit = unit
        self.done = self.rows = self.bad = 0
        self.t0 = self._last = time.perf_counter()

    def line(self) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - self.done) * dt / self.done if self.done else float("nan")
        return (
            f"[{self.name}] {self.done}/{self.total} clips  {self.rows / dt:8.1f} {self.unit}/s  "
            f"{self.done / dt:6.2f} clips/s  {self.bad} not ok  ETA {eta:5.0f}s"
        )

    def update(self, clip: ClipFeatures) -> None:
        self.done += 1
        self.rows += len(clip.values)
        self.bad += clip.status != "ok"
        now = time.perf_counter()
        if not self.enabled or (now - self._last < self.every_s and self.done < self.total):
            return
        self._last = now
        sys.stderr.write("\r" + self.line() + ("\n" if self.done == self.total else ""))
        sys.stderr.flush()


class _WriterThread:
    """Feeds a FeatureWriter from a bounded queue so HDF5 writes overlap extraction."""

    def __init__(self, writer: FeatureWriter, depth: int) -> None:
        self.writer = writer
        self.q: queue.Queue[ClipFeatures | None] = queue.Queue(maxsize=depth)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop, name="avemo-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (item := self.q.get()) is not None:
            if self.errors:
                continue  # keep draining so the producer never blocks
            try:
                self.writer.add(item)
            except BaseException as e:  # noqa: BLE001 - re-raised by the main thread
                self.errors.append(e)

    def put(self, item: ClipFeatures) -> None:
        self.check()
        self.q.put(item)

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()


def _open_writer(path: Path, fs: FeatureSet, shard_clips: int, rank: int, on_mismatch: str,
                 compression: str | None) -> FeatureWriter:
    prov = fs.provenance()
    try:
        return FeatureWriter(path, prov, shard_clips=shard_clips, rank=rank, compression=compression)
    except ConfigMismatchError:
        if on_mismatch != "new":
            raise
        alt = path.with_name(f"{path.stem}-{prov['config_hash']}.h5")
        print(f"[{fs.name}] config differs from {path.name}: writing {alt.name}", file=sys.stderr)
        return FeatureWriter(alt, prov, shard_clips=shard_clips, rank=rank, compression=compression)


def _failed_marker(path: Path, rank: int) -> Path:
    return path.with_name(path.name + ".shards") / f"rank-{rank}.failed"


def _mark_failed(path: Path, rank: int, e: BaseException) -> None:
    marker = _failed_marker(path, rank)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{type(e).__name__}: {e}")
    except OSError:
        pass


def _wait_for_clips(writer: FeatureWriter, expected: Iterable[str], since: float,
                    timeout_s: float, poll_s: float = 0.5) -> None:
    """Rank 0: block until every expected clip is committed by some rank.

    A ``rank-<r>.failed`` marker counts only when written after ``since`` (this run's start),
    so one left by an earlier run cannot abort this one either.
    """
    expected = set(expected)
    t0 = time.time()
    while True:
        missing = expected - writer.committed()
        if not missing:
            return
        failed = [
            p for p in (writer.shard_dir.glob("rank-*.failed") if writer.shard_dir.exists() else [])
            if p.stat().st_mtime >= since
        ]
        if failed:
            raise RuntimeError(
                f"{writer.path.name}: rank(s) failed, not consolidating: "
                + "; ".join(f"{p.stem}: {p.read_text()}" for p in failed)
                + ". Rerun the same command to resume."
            )
        if time.time() - t0 > timeout_s:
            raise TimeoutError(
                f"{writer.path.name}: {len(missing)} clips of other ranks still not committed "
                f"after {timeout_s:.0f}s (e.g. {sorted(missing)[:3]}); rerun to resume"
            )
        time.sleep(poll_s)


def _extract_into(writer: FeatureWriter, fs: FeatureSet, share: Sequence[ClipInput],
                  batch_clips: int, label: str, progress: bool) -> None:
    """Extract this rank's uncommitted clips and commit them (Ctrl-C keeps what is finished)."""
    done = writer.done()
    todo = [c for c in share if c.clip_id not in done]
    unit = "frames" if getattr(fs, "modality", "") == "video" else "rows"
    prog = _Progress(label, len(todo), progress, unit=unit)
    wt = _WriterThread(writer, depth=4 * batch_clips)
    # A feature set that pipelines across clips itself (decode workers, cross-clip frame
    # batches: ``streams_clips = True``) gets every clip in one call, so its workers never
    # drain at batch boundaries; the others get ``batch_clips`` clips per call.
    step = max(len(todo), 1) if getattr(fs, "streams_clips", False) else batch_clips
    try:
        for i in range(0, len(todo), step):
            for res in _safe_extract(fs, todo[i : i + step], retry_batch=batch_clips):
                wt.put(res)
                prog.update(res)
    except KeyboardInterrupt:
        wt.close()
        writer.flush()  # keep what is finished: the rerun resumes after it
        raise
    finally:
        if wt.thread.is_alive():
            wt.close()
    wt.check()
    writer.flush()


def run_features(
    manifest: str | os.PathLike[str] | pd.DataFrame,
    feature_sets: Sequence[str],
    out_dir: str | os.PathLike[str],
    device: str = "cpu",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    batch_clips: int = 8,
    shard_clips: int | None = None,
    on_mismatch: str = "error",
    progress: bool = True,
    compression: str | None = None,
) -> dict[str, Path]:
    """Extract every named feature set for every manifest clip; returns the files written.

    ``shard_clips`` (default ``$AVEMO_SHARD_CLIPS`` or 32) is how many clips one committed shard
    holds: at most that much work is lost when the process dies. ``compression`` ("gzip" or
    "lzf"; default: the feature set's ``store_compression`` attribute, else none) trades the
    memory-mappable layout for smaller files. Only rank 0 returns paths.
    """
    load_for(list(feature_sets))
    df = manifest if isinstance(manifest, pd.DataFrame) else load_manifest(manifest)
    clips = clip_inputs(df)
    order = [c.clip_id for c in clips]
    rank, world = _dist()
    started = time.time()
    shard_clips = int(shard_clips or os.environ.get("AVEMO_SHARD_CLIPS", DEFAULT_SHARD_CLIPS))
    timeout_s = float(os.environ.get("AVEMO_RANK_TIMEOUT_S", 7 * 86400))
    out = Path(out_dir)
    written: dict[str, Path] = {}
    batch_clips = max(1, int(batch_clips))
    for name in feature_sets:
        fs: FeatureSet = FEATURE_SETS.build(name, (overrides or {}).get(name), device)
        path = out / f"{name}.h5"
        _failed_marker(path, rank).unlink(missing_ok=True)  # stale, from an earlier run
        writer: FeatureWriter | None = None
        try:
            # a feature set may ask for compressed storage (e.g. uint8 face crops)
            comp = compression or getattr(fs, "store_compression", None)
            writer = _open_writer(path, fs, shard_clips, rank, on_mismatch, comp)
            _extract_into(writer, fs, clips[rank::world], batch_clips,
                          name if world == 1 else f"{name} rank {rank}", progress)
        except BaseException as e:
            if world > 1:  # tell rank 0 to stop waiting for this rank
                _mark_failed(writer.path if writer is not None else path, rank, e)
            raise
        finally:
            close = getattr(fs, "close", None)  # e.g. stop a video set's decode workers
            if callable(close):
                close()
        if world > 1:
            dist = _torch_dist()
            if dist is not None:
                dist.barrier()
            if rank == 0:
                _wait_for_clips(writer, order, started, timeout_s)
        if rank == 0:
            written[name] = writer.finalize(order=order)
            if progress:
                print(f"[{name}] wrote {written[name]}", file=sys.stderr)
    return written
