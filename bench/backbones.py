"""Backbone throughput (crops/s) alone, for the faces benchmark table.

``python -m avemo.bench --only backbones [--quick] [--device cpu]`` writes one row per
backbone; ``rows()`` returns them.
Backbones whose weights are not on this machine are reported as skipped, not failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from avemo.bench.table import write_section
from avemo.extract.registry import BACKBONES
from avemo.extract.video import backbones as _backbones  # noqa: F401 - registers
from avemo.extract.weights import MissingWeightsError


def measure(
    name: str, n: int = 2048, device: str = "cpu", repeats: int = 3, **options: Any
) -> dict[str, Any]:
    """Best-of-``repeats`` crops/s of ``embed`` on ``n`` crops (uint8 noise: speed is content-free)."""
    try:
        bb = BACKBONES.build(name, device=device, **options)
    except MissingWeightsError as e:
        return {
            "backbone": name,
            "device": device,
            "crops/s": "skipped",
            "note": str(e).split(".")[0],
        }
    s = bb.input_size
    crops = torch.randint(
        0, 256, (n, s, s, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    bb.embed(crops[: min(n, 64)])  # warm-up (allocator, oneDNN kernels, cuDNN autotune)
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        bb.embed(crops)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return {
        "backbone": name,
        "device": device,
        "input": f"{s}x{s}{' grey' if bb.grayscale else ''}",
        "out_dim": bb.out_dim,
        "batch": getattr(bb, "batch_size", ""),
        "threads": torch.get_num_threads(),
        "crops/s": round(n / best, 1),
    }


def rows(
    names: list[str] | None = None, n: int = 2048, device: str = "cpu"
) -> list[dict[str, Any]]:
    return [
        measure(name, n=n, device=device)
        for name in names or ["fer2013_minixception", "arcface_r50"]
    ]


def main(quick: bool = False, device: str = "cpu") -> Path:
    """Measure the default backbones (skipped where weights are missing), write the section."""
    out = rows(n=256 if quick else 2048, device=device)
    for r in out:
        print(r)
    notes = (
        "Backbone alone on random uint8 crops at its input size, best of the repeats; "
        "`skipped` rows: weights not on this machine. Shared machine: compare rows of one run. "
        "Reproduce: `python -m avemo.bench --only backbones`."
    )
    return write_section("Face backbones: crops/s", out, notes)
