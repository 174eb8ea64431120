"""Lightning callbacks of a stage-two run: checkpoint selection, metrics history, progress.

* ``BestCheckpoint`` -- ``checkpoints/best.pt`` whenever the monitored validation metric
  improves, ``checkpoints/last.pt`` when training ends (plain model state dicts, loadable with
  ``torch.load(weights_only=True)``; Lightning's own checkpointing would pickle the module).
* ``MetricsHistory`` -- one row per epoch (epoch, lr, train/loss, val/...) in memory and in
  ``metrics.csv`` of the run folder, rewritten every epoch (a killed run keeps its curve).
* ``EpochLines`` -- one line per epoch with the run's ETA (logs, pipes, grids).
* ``EpochProgressBar`` -- Lightning's tqdm bar titled ``epoch k/N`` with the run's ETA.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar


def _val_metrics(module: L.LightningModule) -> dict[str, float]:
    return dict(getattr(module, "last_val", {}) or {})


def improved(best: float | None, value: float, mode: str) -> bool:
    """Whether ``value`` beats ``best`` (``mode`` max or min); a NaN never does, anything beats
    none or NaN (also the stacked trainer's rule, so its best epoch is the one a separate run keeps)."""
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """``rows`` as one CSV (columns in first-seen order), rewritten whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


class BestCheckpoint(L.Callback):
    """Keep the model weights of the best epoch (by ``monitor``/``mode``) and of the last one."""

    def __init__(self, run_dir: Path | None, monitor: str, mode: str) -> None:
        self.dir = Path(run_dir) / "checkpoints" if run_dir else None
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_val_res: dict[str, Any] | None = None  # the assembled val pass of best.pt's epoch

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        value = _val_metrics(module).get(self.monitor)
        if value is None or trainer.sanity_checking or not improved(self.best, value, self.mode):
            return
        self.best, self.best_epoch = value, trainer.current_epoch
        self._save(module, "best.pt")
        self.best_val_res = getattr(module, "last_val_res", None)  # these weights' val predictions

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._save(module, "last.pt")

    def _save(self, module: L.LightningModule, name: str) -> None:
        self.save_model(getattr(module, "model", module), name)

    def save_model(self, model: torch.nn.Module, name: str) -> None:
        """``checkpoints/<name>``: the model's state dict on the CPU."""
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, self.dir / name)


class MetricsHistory(L.Callback):
    """Per-epoch rows: ``epoch``, ``lr``, mean ``train/loss`` over the epoch's batches, ``val/*``."""

    def __init__(self, run_dir: Path | None) -> None:
        self.path = Path(run_dir) / "metrics.csv" if run_dir else None
        self.rows: list[dict[str, Any]] = []
        self._losses: list[torch.Tensor] = []

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach())

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
        }
        if self._losses:
            row["train/loss"] = float(torch.stack(self._losses).mean())
        self._losses = []
        row.update(_val_metrics(module))
        self.rows.append(row)
        if self.path is not None:
            write_rows(self.path, self.rows)


def _clock(seconds: float) -> str:
    s = int(round(max(seconds, 0.0)))
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class _RunClock:
    """Elapsed time since fit start and the ETA of the remaining epochs (mean epoch time)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def eta(self, done_epochs: int, max_epochs: int | None) -> tuple[float, float]:
        elapsed = time.perf_counter() - self.t0
        if not done_epochs or max_epochs is None:  # nothing to extrapolate from, or no end
            return elapsed, float("nan")
        left = elapsed / done_epochs * (max_epochs - done_epochs)
        return elapsed, left


class EpochLines(L.Callback):
    """``[name] epoch k/N  train/loss ..  val/loss ..  <monitor> ..  (m:ss, ETA m:ss)``."""

    def __init__(self, name: str, monitor: str, history: MetricsHistory) -> None:
        self.name, self.monitor, self.history = name, monitor, history

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.clock = _RunClock()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        row = self.history.rows[-1] if self.history.rows else {}
        shown = {k: v for k, v in row.items() if k in ("train/loss", "val/loss", self.monitor)}
        k, n = trainer.current_epoch + 1, trainer.max_epochs
        elapsed, left = self.clock.eta(k, n)
        eta = f", ETA {_clock(left)}" if n is not None and k < n else ""
        print(
            f"[{self.name}] epoch {k:>{len(str(n))}}/{n}  "
            + "  ".join(f"{key} {v:.4f}" for key, v in shown.items())
            + f"  ({_clock(elapsed)}{eta})",
            flush=True,
        )


class EpochProgressBar(TQDMProgressBar):
    """tqdm bar per epoch: ``epoch k/N (run ETA m:ss)``, batch progress and the epoch's ETA."""

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_fit_start(trainer, module)
        self.clock = _RunClock()

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        k, n = trainer.current_epoch, trainer.max_epochs
        _, left = self.clock.eta(k, n)
        eta = f" (run ETA {_clock(left)})" if k else ""
        self.train_progress_bar.set_description(f"epoch {k + 1}/{n}{eta}")
