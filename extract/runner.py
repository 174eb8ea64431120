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

import contextlib
import fcntl
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from avemo import settings
from avemo.data.manifest import load_manifest
from avemo.data.store import ClipFeatures, ConfigMismatchError, FeatureWriter
from avemo.errors import OutputLockedError, UsageError
from avemo.extract.base import ClipInput, FeatureSet
from avemo.extract.registry import FEATURE_SETS, load_for
from avemo.progress import Progress

log = logging.getLogger("avemo.extract")


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


def media_path(fs: FeatureSet, clip: ClipInput) -> str | None:
    """The file this set reads for the clip: video sets the video, audio sets the audio (else
    the video's own track), others whichever is named."""
    if getattr(fs, "modality", None) == "video":
        return clip.video
    return clip.audio or clip.video


def _missing(clip: ClipInput, path: str) -> ClipFeatures:
    return ClipFeatures.empty(
        clip.clip_id,
        (),
        "missing",
        f"media file {path} does not exist (moved or "
        "deleted after the manifest was written?); rerun once it is back",
    )


def _error(clip: ClipInput, e: BaseException | str) -> ClipFeatures:
    msg = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    return ClipFeatures.empty(clip.clip_id, (), "error", msg)


def _safe_extract(
    fs: FeatureSet, batch: Sequence[ClipInput], retry_batch: int = 1
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


def _open_writer(
    path: Path,
    fs: FeatureSet,
    shard_clips: int,
    rank: int,
    on_mismatch: str,
    compression: str | None,
) -> FeatureWriter:
    prov = fs.provenance()
    try:
        return FeatureWriter(
            path, prov, shard_clips=shard_clips, rank=rank, compression=compression
        )
    except ConfigMismatchError:
        if on_mismatch != "new":
            raise
        alt = path.with_name(f"{path.stem}-{prov['config_hash']}.h5")
        log.warning(f"[{fs.name}] config differs from {path.name}: writing {alt.name}")
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


def _wait_for_clips(
    writer: FeatureWriter,
    expected: Iterable[str],
    since: float,
    timeout_s: float,
    poll_s: float = 0.5,
) -> None:
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
            p
            for p in (writer.shard_dir.glob("rank-*.failed") if writer.shard_dir.exists() else [])
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


def _extract_into(
    writer: FeatureWriter,
    fs: FeatureSet,
    share: Sequence[ClipInput],
    batch_clips: int,
    label: str,
    progress: bool,
) -> None:
    """Extract this rank's uncommitted clips and commit them (Ctrl-C keeps what is finished).

    A clip whose media file is not there gets status ``missing`` without reaching the feature
    set; one committed as ``missing`` whose file is back is extracted again.
    """
    if writer.rank == 0:  # only rank 0 ever rewrites the final file
        earlier = writer.final_status()
        writer.discard(
            [
                c.clip_id
                for c in share
                if earlier.get(c.clip_id) == "missing"
                and (p := media_path(fs, c)) is not None
                and os.path.exists(p)
            ]
        )
    done = writer.done()
    todo = [c for c in share if c.clip_id not in done]
    gone = {
        c.clip_id: p for c in todo if (p := media_path(fs, c)) is not None and not os.path.exists(p)
    }
    if gone:
        log.warning(
            f"[{label}] {len(gone)} clip(s) name media files that do not exist (e.g. "
            f"{next(iter(gone.values()))}): status missing; the rest is extracted"
        )
        for c in todo:
            if c.clip_id in gone:
                writer.add(_missing(c, gone[c.clip_id]))
        todo = [c for c in todo if c.clip_id not in gone]
    video = getattr(fs, "modality", "") == "video"
    prog = Progress(label, len(todo), "clips", "frames" if video else "audio-s", enabled=progress)
    wt = _WriterThread(writer, depth=4 * batch_clips)
    # A feature set that pipelines across clips itself (decode workers, cross-clip frame
    # batches: ``streams_clips = True``) gets every clip in one call, so its workers never
    # drain at batch boundaries; the others get ``batch_clips`` clips per call.
    step = max(len(todo), 1) if getattr(fs, "streams_clips", False) else batch_clips
    try:
        for i in range(0, len(todo), step):
            for res in _safe_extract(fs, todo[i : i + step], retry_batch=batch_clips):
                wt.put(res)
                prog.update(1, len(res.values) if video else _seconds(res), res.status != "ok")
    except KeyboardInterrupt:
        wt.close()
        writer.flush()  # keep what is finished: the rerun resumes after it
        raise
    finally:
        prog.close()
        if wt.thread.is_alive():
            wt.close()
    wt.check()
    writer.flush()


def _seconds(res: ClipFeatures) -> float:
    """Audio seconds a clip's rows span (first to last time stamp plus one row period)."""
    ts = res.timestamps
    if len(ts) == 0:
        return 0.0
    step = float(ts[1] - ts[0]) if len(ts) > 1 else 0.0
    return float(ts[-1] - ts[0]) + step


def _lock_path(path: Path, rank: int) -> Path:
    return path.with_name(f".{path.name}.lock" + (f"-r{rank}" if rank else ""))


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text().strip()
    except OSError:
        return "another process"
    return text or "another process"


@contextlib.contextmanager
def output_lock(
    path: Path, rank: int = 0, wait_s: float | None = None, poll_s: float = 0.5
) -> Iterator[None]:
    """Hold ``<out>/.<set>.h5.lock`` (one per rank) while this process writes ``path``.

    A second run on the same output waits (``wait_s`` None: until the first is done, then it
    finds every clip committed and only consolidates) or, after ``wait_s`` seconds (0: at
    once), raises OutputLockedError naming the PID that holds it. ``flock`` locks die with
    their process, so a killed run never leaves a stale lock; the file is removed on release
    and a waiter re-checks it still holds the file that is on disk.
    """
    lock = _lock_path(path, rank)
    made_dir = not lock.parent.exists()
    lock.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    told = False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the holder removed its (empty) output folder on release
            lock.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = _holder(lock)
            if wait_s is not None and time.monotonic() - t0 >= wait_s:
                raise OutputLockedError(
                    f"{path} is being written by {who}; wait for it to finish, "
                    "or write to another output folder (-o)"
                ) from None
            if not told:
                log.warning(
                    f"[{path.stem}] {path} is being written by {who}: waiting for it "
                    "(Ctrl-C to stop; rerun later to resume)"
                )
                told = True
            time.sleep(poll_s)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and flock: retry
    try:
        os.ftruncate(fd, 0)
        os.write(
            fd,
            f"PID {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%H:%M:%S')}".encode(),
        )
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
        if made_dir:
            with contextlib.suppress(OSError):
                lock.parent.rmdir()  # only when still empty: nothing was written


def _build_sets(
    names: Sequence[str], overrides: Mapping[str, Any] | None, device: str
) -> list[FeatureSet]:
    """Every named set with its config checked, before any clip is read or anything written."""
    overrides = dict(overrides or {})
    extra = sorted(set(overrides) - set(names))
    if extra:
        raise UsageError(
            f"config overrides name feature set(s) {', '.join(extra)} that this run does not "
            f"extract ({', '.join(names)}); add -s {extra[0]} or drop the override"
        )
    return [FEATURE_SETS.build(n, overrides.get(n), device) for n in names]


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
    lock_wait_s: float | None = None,
    built: Mapping[str, FeatureSet] | None = None,
) -> dict[str, Path]:
    """Extract every named feature set for every manifest clip; returns the files written.

    ``shard_clips`` (default ``$AVEMO_SHARD_CLIPS`` or 32) is how many clips one committed shard
    holds: at most that much work is lost when the process dies. ``compression`` ("gzip" or
    "lzf"; default none) trades the memory-mappable layout for smaller files: measured on
    face_crops (uint8) gzip -29 % / lzf -22 % size but 7-40x / 2-18x slower reads and no mmap, so
    no feature set asks for it (README, "runner hooks"). Only rank 0 returns paths.

    Every feature set's config and the manifest are checked first (a mistake is one
    UserError and nothing is written); each output file is locked while it is written
    (``lock_wait_s``: see ``output_lock``). ``built`` gives sets the caller already built
    (with these overrides), so their weights are not loaded twice.
    """
    if on_mismatch not in ("error", "new"):
        raise UsageError(f"on_mismatch must be 'error' or 'new', got {on_mismatch!r}")
    if compression not in (None, "gzip", "lzf"):
        raise UsageError(f"compression must be gzip or lzf, got {compression!r}")
    if not feature_sets:
        raise UsageError("no feature set named; pass -s NAME (see `avemo list feature-sets`)")
    load_for(list(feature_sets))
    built = dict(built or {})
    sets = _build_sets(
        [n for n in feature_sets if n not in built],
        {k: v for k, v in (overrides or {}).items() if k not in built},
        device,
    )
    sets = [built[n] if n in built else sets.pop(0) for n in feature_sets]
    # media files are looked for per clip (a missing one is that clip's status, not the run's
    # end); a manifest none of whose files exist is refused as the mistake it is
    df = (
        manifest
        if isinstance(manifest, pd.DataFrame)
        else load_manifest(manifest, check_files=False)
    )
    if len(df) == 0:
        raise UsageError("the manifest has no rows: nothing to extract")
    _refuse_if_no_media(df)
    clips = clip_inputs(df)
    order = [c.clip_id for c in clips]
    rank, world = _dist()
    started = time.time()
    env = settings.current()
    shard_clips = int(shard_clips or env.shard_clips)
    timeout_s = env.rank_timeout_s
    out = Path(out_dir)
    written: dict[str, Path] = {}
    batch_clips = max(1, int(batch_clips))
    for name, fs in zip(feature_sets, sets, strict=True):
        path = out / f"{name}.h5"
        with output_lock(path, rank, lock_wait_s):
            _failed_marker(path, rank).unlink(missing_ok=True)  # stale, from an earlier run
            writer = _extract_set(
                fs,
                name,
                path,
                clips,
                order,
                rank,
                world,
                started,
                timeout_s,
                batch_clips,
                shard_clips,
                on_mismatch,
                compression,
                progress,
            )
            if rank == 0:
                written[name] = writer.finalize(order=order)
                if progress:
                    print(f"[{name}] wrote {written[name]}", file=sys.stderr)
    return written


def _refuse_if_no_media(df: pd.DataFrame) -> None:
    named = [str(p) for col in ("video", "audio") if col in df.columns for p in df[col].dropna()]
    if named and not any(os.path.exists(p) for p in named):
        raise UsageError(
            f"none of the manifest's {len(named)} media files exist (e.g. {named[0]}); "
            "are its paths relative to the manifest's own folder?"
        )


def _extract_set(
    fs: FeatureSet,
    name: str,
    path: Path,
    clips: Sequence[ClipInput],
    order: Sequence[str],
    rank: int,
    world: int,
    started: float,
    timeout_s: float,
    batch_clips: int,
    shard_clips: int,
    on_mismatch: str,
    compression: str | None,
    progress: bool,
) -> FeatureWriter:
    writer: FeatureWriter | None = None
    try:
        writer = _open_writer(path, fs, shard_clips, rank, on_mismatch, compression)
        if world == 1:  # (with several ranks, `avemo inspect --verify` checks a finished file)
            damaged = writer.repair()
            if damaged:
                log.warning(
                    f"[{name}] {len(damaged)} clip(s) of {writer.path} no longer match their "
                    f"checksums (damaged on disk: {', '.join(damaged[:5])}"
                    f"{' ...' if len(damaged) > 5 else ''}): extracting them again"
                )
        _extract_into(
            writer,
            fs,
            clips[rank::world],
            batch_clips,
            name if world == 1 else f"{name} rank {rank}",
            progress,
        )
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
    return writer
