"""The batched, resumable extraction runner behind ``avemo features``.

Per feature set: skip clips already committed, extract the rest in batches, hand results to
a writer thread (HDF5 I/O overlaps compute), commit shards, consolidate. Under ``torchrun``
each rank takes every WORLD_SIZE-th clip and writes its own shards; rank 0 consolidates.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from avemo.data.manifest import load_manifest
from avemo.data.store import ClipFeatures, ConfigMismatchError, FeatureWriter
from avemo.extract.base import ClipInput, FeatureSet
from avemo.extract.registry import FEATURE_SETS, load_all


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def clip_inputs(df: pd.DataFrame) -> list[ClipInput]:
    def get(row: Any, col: str) -> str | None:
        v = getattr(row, col, None)
        return None if v is None or pd.isna(v) else str(v)

    return [ClipInput(str(r.clip_id), get(r, "video"), get(r, "audio")) for r in df.itertuples()]


def _safe_extract(fs: FeatureSet, batch: Sequence[ClipInput]) -> list[ClipFeatures]:
    """Run a batch; if the batch itself fails, isolate the bad clip by running one at a time."""
    try:
        out = list(fs.extract(batch))
    except Exception:  # noqa: BLE001 - a bad clip must not stop the run
        out = []
        for clip in batch:
            try:
                out.extend(fs.extract([clip]))
            except Exception as e:  # noqa: BLE001
                out.append(ClipFeatures.empty(clip.clip_id, (), "error", f"{type(e).__name__}: {e}"))
    return out


class _Progress:
    def __init__(self, name: str, total: int, enabled: bool) -> None:
        self.name, self.total, self.enabled = name, total, enabled
        self.done = self.rows = 0
        self.t0 = time.perf_counter()

    def update(self, clip: ClipFeatures) -> None:
        self.done += 1
        self.rows += len(clip.values)
        if not self.enabled:
            return
        dt = max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - self.done) * dt / self.done
        sys.stderr.write(
            f"\r[{self.name}] {self.done}/{self.total} clips  {self.rows / dt:7.1f} rows/s  "
            f"ETA {eta:5.0f}s"
        )
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _write_loop(writer: FeatureWriter, q: queue.Queue, errors: list[BaseException]) -> None:
    while True:
        item = q.get()
        if item is None:
            return
        try:
            writer.add(item)
        except BaseException as e:  # noqa: BLE001 - surfaced by the main thread
            errors.append(e)


def _open_writer(path: Path, fs: FeatureSet, shard_clips: int, rank: int, on_mismatch: str) -> FeatureWriter:
    prov = fs.provenance()
    try:
        return FeatureWriter(path, prov, shard_clips=shard_clips, rank=rank)
    except ConfigMismatchError:
        if on_mismatch != "new":
            raise
        alt = path.with_name(f"{path.stem}-{prov['config_hash']}.h5")
        print(f"[{fs.name}] config differs from {path.name}: writing {alt.name}", file=sys.stderr)
        return FeatureWriter(alt, prov, shard_clips=shard_clips, rank=rank)


def _wait_for_ranks(writer: FeatureWriter, rank: int, world: int, timeout_s: float = 86400) -> None:
    marker = writer.shard_dir / f"rank-{rank}.done"
    marker.write_text("done")
    if rank != 0:
        return
    t0 = time.time()
    while not all((writer.shard_dir / f"rank-{r}.done").exists() for r in range(world)):
        if time.time() - t0 > timeout_s:
            raise TimeoutError("other ranks did not finish extraction")
        time.sleep(0.5)


def run_features(
    manifest: str | os.PathLike[str] | pd.DataFrame,
    feature_sets: Sequence[str],
    out_dir: str | os.PathLike[str],
    device: str = "cpu",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    batch_clips: int = 8,
    shard_clips: int = 32,
    on_mismatch: str = "error",
    progress: bool = True,
) -> dict[str, Path]:
    """Extract every named feature set for every manifest clip; returns the written files."""
    load_all()
    df = manifest if isinstance(manifest, pd.DataFrame) else load_manifest(manifest)
    clips = clip_inputs(df)
    order = [c.clip_id for c in clips]
    rank, world = _dist()
    out = Path(out_dir)
    written: dict[str, Path] = {}
    for name in feature_sets:
        fs: FeatureSet = FEATURE_SETS.build(name, (overrides or {}).get(name), device)
        writer = _open_writer(out / f"{name}.h5", fs, shard_clips, rank, on_mismatch)
        done = writer.done()
        todo = [c for c in clips[rank::world] if c.clip_id not in done]
        prog = _Progress(name, len(todo), progress and rank == 0)
        q: queue.Queue = queue.Queue(maxsize=4 * max(batch_clips, 1))
        errors: list[BaseException] = []
        thread = threading.Thread(target=_write_loop, args=(writer, q, errors), daemon=True)
        thread.start()
        try:
            for i in range(0, len(todo), batch_clips):
                for res in _safe_extract(fs, todo[i : i + batch_clips]):
                    q.put(res)
                    prog.update(res)
                if errors:
                    raise errors[0]
        finally:
            q.put(None)
            thread.join()
        if errors:
            raise errors[0]
        writer.flush()
        if world > 1:
            _wait_for_ranks(writer, rank, world)
        if rank == 0:
            written[name] = writer.finalize(order=order)
    return written
