"""Layer costs (``python -m avemo.bench --only layers``): what one stage-two training step costs
on the CPU with PyTorch's dropout vs ``fusion.models.dropout``, and with glibc's default heap
vs ``avemo.allocator.tune_allocator``, and for the transformer Q/K/V over every row vs the
valid rows only. Zhou models at AFEW scale (batch 32, face 512-d x 35..105 rows, audio 96-d x
17..52).

Dropout variants alternate in one process (round-robin, best of N). The allocator cannot be
switched back inside a process, so each heap setting is a child process of its own, twice,
alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from avemo.allocator import tune_allocator
from avemo.bench.table import write_section
from avemo.fusion.models import dropout as fast
from avemo.fusion.registry import MODELS, load_all
from avemo.fusion.spec import TaskSpec

TEMPORALS = ("fan_self", "fan_relation", "transformer")


def _batch(seed: int = 0, b: int = 32) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, dim, lo, hi in (("face", 512, 35, 105), ("audio", 96, 17, 52)):
        lengths = torch.randint(lo, hi + 1, (b,), generator=g)
        t = int(lengths.max())
        out[name] = torch.randn(b, t, dim, generator=g)
        out[f"{name}_mask"] = torch.arange(t)[None] < lengths[:, None]
    return out, torch.randint(0, 7, (b,), generator=g)


def _step_ms(temporal: str, steps: int, native: bool, pack: bool = True) -> float:
    """Mean ms per training step (forward, cross-entropy, backward, Adam) of one Zhou model."""
    load_all()
    torch.manual_seed(0)
    model = MODELS.build(
        "zhou",
        inputs={"face": (512,), "audio": (96,)},
        task=TaskSpec("clip", 7),
        temporal=temporal,
        fusion={"name": "fbp", "k": 5, "o": 256, "dropout": 0.1},
    )
    for mod in model.modules():  # the transformer's valid-rows-only Q/K/V
        if hasattr(mod, "pack_rows"):
            mod.pack_rows = pack
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    batches = [_batch(i) for i in range(4)]
    keep = fast.dropout
    if native:
        fast.dropout = lambda x, p, training=True: torch.nn.functional.dropout(x, p, training)
    try:
        for i in range(steps + 1):
            if i == 1:
                t0 = time.perf_counter()  # step 0 warms up
            x, y = batches[i % len(batches)]
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        fast.dropout = keep
    return (time.perf_counter() - t0) / steps * 1e3


def _child(temporal: str, steps: int) -> float:
    """This heap setting (AVEMO_MALLOC from the environment), fast dropout."""
    tune_allocator()
    return _step_ms(temporal, steps, native=False)


def run_bench(
    steps: int = 20, repeats: int = 3, threads: int = 1, write: bool = True
) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    for temporal in TEMPORALS:
        best = {"native": float("inf"), "fast": float("inf")}
        for _ in range(repeats):
            for how in ("native", "fast"):
                best[how] = min(best[how], _step_ms(temporal, steps, how == "native"))
        rows_ms = {True: best["fast"], False: float("inf")}
        if temporal == "transformer":
            for _ in range(repeats):
                for pack in (False, True):
                    rows_ms[pack] = min(rows_ms[pack], _step_ms(temporal, steps, False, pack))
        heap = {"system": float("inf"), "tuned": float("inf")}
        for _ in range(2):
            for how in ("system", "tuned"):
                env = {**os.environ, "AVEMO_MALLOC": how, "OMP_NUM_THREADS": str(threads)}
                r = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "avemo.bench.layers",
                        "--child",
                        temporal,
                        "--steps",
                        str(steps),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                heap[how] = min(heap[how], float(r.stdout.strip().splitlines()[-1]))
        rows.append(
            {
                "zhou temporal (fbp)": temporal,
                "torch dropout ms/step": best["native"],
                "avemo dropout ms/step": best["fast"],
                "dropout speed-up": best["native"] / best["fast"],
                "system heap ms/step": heap["system"],
                "tuned heap ms/step": heap["tuned"],
                "heap speed-up": heap["system"] / heap["tuned"],
                "Q/K/V all rows ms/step": rows_ms[False] if temporal == "transformer" else None,
                "Q/K/V valid rows ms/step": rows_ms[True] if temporal == "transformer" else None,
            }
        )
        print(rows[-1], flush=True)
    notes = (
        f"One Zhou model (FBP k=5 o=256, dropout 0.1; FAN dropout 0.5 / 0.6 as the spec), batch 32, "
        f"face 512-d x 35..105 rows, audio 96-d x 17..52 rows, {steps} training steps after a "
        f"warm-up step, torch threads {threads}. Dropout: both variants in one process, alternating, "
        f"best of {repeats}; Q/K/V: the transformer projecting every padded row vs the valid "
        f"rows only (one GEMM either way), alternating, best of {repeats}; the heap columns use the avemo dropout, one child process per setting, "
        "alternating, best of 2 (`AVEMO_MALLOC=system` vs the default). Reproduce: "
        "`python -m avemo.bench --only layers`."
    )
    if write:
        write_section("Stage two: layer costs on the CPU (dropout, heap)", rows, notes)
    return rows


def main(argv: Sequence[str] | None = None, quick: bool = False) -> int:
    p = argparse.ArgumentParser(
        prog="python -m avemo.bench --only layers", description=__doc__.split("\n")[0]
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true")
    a, _unknown = p.parse_known_args(argv)
    if a.child:
        print(json.dumps(_child(a.child, a.steps)))
        return 0
    run_bench(3 if quick else a.steps, 1 if quick else a.repeats, a.threads, write=not a.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
