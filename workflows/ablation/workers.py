"""Several processes sharing one grid: ranks, atomic cell claims, local workers, the final wait.

Processes (``RANK``/``WORLD_SIZE`` from ``torchrun`` or plain env, ``SLURM_PROCID``/
``SLURM_NTASKS`` under ``srun``, or ``workers: N`` local processes) claim cells atomically
(``claims/``: O_EXCL files; a dead local process's claims are reclaimed), so no worker idles
while cells remain; rank 0 waits for the others and merges the table.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avemo.workflows.ablation.cells import is_finished
from avemo.workflows.ablation.spec import Cell


class Claims:
    """Atomic cell claims shared by every worker of a grid (local or on other machines over a
    shared folder): ``claims/<cell>.claim`` created with O_EXCL holds host and pid. A claim
    whose process is gone (same host, pid not alive) is reclaimed; one from another host
    stands until its cell is finished or the file is removed."""

    def __init__(self, folder: Path) -> None:
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.pid = socket.gethostname(), os.getpid()

    def _path(self, cell_id: str) -> Path:
        return self.dir / f"{cell_id}.claim"

    def take(self, cell_id: str) -> bool:
        path = self._path(cell_id)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale(path):
                    return False
                try:  # one reclaimer wins the rename; the others see the new claim
                    os.rename(path, path.with_name(f"{path.name}.stale-{self.pid}"))
                    os.unlink(path.with_name(f"{path.name}.stale-{self.pid}"))
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": self.host, "pid": self.pid, "time": time.time()}, f)
            return True
        return False

    def _stale(self, path: Path) -> bool:
        try:
            rec = json.loads(path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return time.time() - path.stat().st_mtime > 60 if path.exists() else True
        if rec.get("host") != self.host:
            return False
        try:
            os.kill(int(rec.get("pid", -1)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OverflowError):
            return False
        return False

    def release(self, cell_id: str) -> None:
        self._path(cell_id).unlink(missing_ok=True)


def shard(cells: Sequence[Cell], rank: int, world: int) -> list[Cell]:
    """Round-robin share of rank ``rank`` among ``world`` processes."""
    return list(cells[rank::world])


def dist_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's RANK/WORLD_SIZE, else SLURM's SLURM_PROCID/SLURM_NTASKS."""
    env = os.environ
    rank = env.get("RANK", env.get("SLURM_PROCID", "0"))
    world = env.get("WORLD_SIZE", env.get("SLURM_NTASKS", "1"))
    return int(rank), int(world)


DIST_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_USE_AGENT_STORE",
)


class single_process_env:  # noqa: N801 - used as a context manager, named like one
    """Hide torchrun's variables while cells train: Lightning would otherwise treat every
    single-device run as one rank of a distributed job (the grid, not the run, is sharded)."""

    def __enter__(self) -> None:
        self.saved = {k: v for k, v in os.environ.items() if k in DIST_ENV}
        for k in self.saved:
            del os.environ[k]

    def __exit__(self, *exc: object) -> None:
        os.environ.update(self.saved)


def init_torch_dist(world: int) -> bool:
    """Under torchrun (MASTER_ADDR set) use a gloo group for the final barrier."""
    if world <= 1 or not os.environ.get("MASTER_ADDR"):
        return False
    import torch.distributed as dist  # torch: only under torchrun

    if not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return True


def barrier() -> None:
    """Every torchrun rank has reached the end of its cells."""
    import torch.distributed as dist  # torch: only under torchrun

    dist.barrier()


def wait_for_shards(
    out: Path, world: int, cells: Sequence[Cell], since: float, timeout_s: float
) -> None:
    """Rank 0 waits until every runnable cell is finished (DONE or FAILED) or every rank has
    left a marker written after ``since``; a stale marker of an earlier run does not count."""
    t0 = time.monotonic()
    while True:
        if all(is_finished(out / "runs" / c.cell_id) for c in cells):
            return
        fresh = [
            p for p in (out / "shards").glob(f"rank*-of-{world}.json") if p.stat().st_mtime >= since
        ]
        if len(fresh) >= world:
            return
        if time.monotonic() - t0 > timeout_s:
            print(
                f"[ablate] waited {timeout_s:.0f}s for the other ranks; "
                "the table covers the cells finished so far",
                file=sys.stderr,
            )
            return
        time.sleep(0.5)


def spawn_workers(out: Path, n: int, quiet: bool) -> list[subprocess.Popen[Any]]:
    """Ranks 1..n-1 as local subprocesses on the recorded grid; this process is rank 0."""
    procs = []
    threads = max(1, (os.cpu_count() or 1) // n)
    for r in range(1, n):
        env = {
            **os.environ,
            "RANK": str(r),
            "WORLD_SIZE": str(n),
            "AVEMO_GRID_WORKERS": "1",
            "OMP_NUM_THREADS": str(threads),
        }
        env.pop("MASTER_ADDR", None)  # plain env sharding between the local workers
        cmd = [
            sys.executable,
            "-m",
            "avemo.workflows.ablate",
            str(out / "grid.yaml"),
            "-o",
            str(out),
        ]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None))
    return procs
