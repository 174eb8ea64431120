"""``python -m avemo.bench --only store``: feature-store speed -> dated markdown (``make bench``).

Writes a synthetic feature set through the real writer (shards + consolidation), then reads it
back the ways stage two does: everything at once (h5py read vs memory map) and clip by clip
in random order. Files are in the OS page cache after writing, so reads measure the store's
overhead, not the disk.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from avemo.bench.table import write_section
from avemo.data.store import ClipFeatures, FeatureFile, FeatureWriter, make_provenance


def _clips(n: int, dim: int, rng: np.random.Generator) -> list[ClipFeatures]:
    lengths = rng.integers(20, 180, n)  # 1-7 s at 25 fps
    return [
        ClipFeatures(
            f"clip{i:06d}",
            rng.standard_normal((t, dim), np.float32),
            np.arange(t) / 25.0,
            rng.random(t) > 0.1,
        )
        for i, t in enumerate(lengths)
    ]


def main(quick: bool = False) -> Path:
    n, dim = (400, 128) if quick else (4000, 512)
    rng = np.random.default_rng(0)
    clips = _clips(n, dim, rng)
    rows = sum(len(c.values) for c in clips)
    gb = rows * (dim * 4 + 9) / 1e9
    out: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="avemo-bench-store-") as tmp:
        path = Path(tmp) / "bench.h5"
        t = time.perf_counter()
        w = FeatureWriter(path, make_provenance("bench", {"dim": dim}), shard_clips=32)
        for c in clips:
            w.add(c)
        w.flush()
        t_shards = time.perf_counter() - t
        t = time.perf_counter()
        w.finalize(order=[c.clip_id for c in clips])
        t_final = time.perf_counter() - t
        out.append(
            {
                "operation": "write shards (32 clips, fsync each)",
                "clips/s": n / t_shards,
                "GB/s": gb / t_shards,
                "seconds": t_shards,
            }
        )
        out.append(
            {
                "operation": "consolidate shards -> final",
                "clips/s": n / t_final,
                "GB/s": gb / t_final,
                "seconds": t_final,
            }
        )

        for mmap in (False, True):
            t = time.perf_counter()
            with FeatureFile(path, mmap=mmap) as ff:
                r = ff.load_all()
                checksum = float(r.values.sum(dtype=np.float64))  # touch every page of a map
            dt = time.perf_counter() - t
            out.append(
                {
                    "operation": f"load_all + sum ({'mmap' if mmap else 'h5py read'})",
                    "clips/s": n / dt,
                    "GB/s": gb / dt,
                    "seconds": dt,
                }
            )
        assert np.isfinite(checksum)

        order = rng.permutation([c.clip_id for c in clips])[: min(n, 2000)]
        for mmap in (False, True):
            with FeatureFile(path, mmap=mmap) as ff:
                t = time.perf_counter()
                got = sum(len(ff.clip(cid).values) for cid in order)
                dt = time.perf_counter() - t
            out.append(
                {
                    "operation": f"random clip() ({'mmap' if mmap else 'h5py'})",
                    "clips/s": len(order) / dt,
                    "GB/s": got * (dim * 4 + 9) / 1e9 / dt,
                    "seconds": dt,
                }
            )
        size = path.stat().st_size
    notes = (
        f"{n} clips, {rows} rows of {dim} float32 ({size / 1e9:.2f} GB file, contiguous "
        "layout), page cache warm. `python -m avemo.bench --only store [--quick]`."
    )
    return write_section("Feature store (HDF5 ragged)", out, notes)
