"""The LightningModule: loss, optimiser + LR schedule, per-epoch validation metrics, checkpoints.

Validation outputs are assembled by the datamodule (clip scores, or per-frame averages of
overlapping windows) and scored over the whole partition, as the papers report them.
Checkpoints are plain ``state_dict`` files of the model (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from avemo.fusion.datamodule import CachedFeatureDataModule
from avemo.fusion.evaluate import _is_input, score
from avemo.fusion.optim import jca_reference_lr  # noqa: F401 - re-exported
from avemo.fusion.registry import OPTIMIZERS, SCHEDULES


def build_loss(cfg: Mapping[str, Any], dm: CachedFeatureDataModule) -> nn.Module:
    """The run's loss: ``loss.name`` (default: the task's) with its options (class weights
    from the training targets)."""
    task = dm.task_obj
    return task.build_loss(cfg.get("loss") or {}, task.train_targets(dm.index, dm.part_seqs["train"]))


# ----------------------------------------------------------------------------- module


class FusionModule(L.LightningModule):
    """Wraps a zoo model; logs ``train/loss``, ``val/loss`` and ``val/<metric>`` every epoch."""

    def __init__(self, model: nn.Module, cfg: Mapping[str, Any], dm: CachedFeatureDataModule,
                 run_dir: Path | None = None) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.dm = dm
        self.task = dm.task_obj
        self.loss_fn = build_loss(cfg, dm)
        self.monitor, self.mode = self.task.monitor(cfg["trainer"])
        self.run_dir = Path(run_dir) if run_dir else None
        self.history: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._val: list[tuple[Tensor, Tensor]] = []
        self._val_loss: list[Tensor] = []
        self._train_loss: list[Tensor] = []
        self._last_val: dict[str, float] = {}

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.model({k: v for k, v in batch.items() if _is_input(k, self.dm.modalities)})

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        out = self(batch)
        loss = self.task.batch_loss(self.loss_fn, out, batch)
        self._train_loss.append(loss.detach())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["index"]))
        return loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        out = self(batch)
        self._val_loss.append(self.task.batch_loss(self.loss_fn, out, batch).detach())
        self._val.append((batch["index"], out.detach().float()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        seq = torch.cat([s for s, _ in self._val])
        out = torch.cat([o for _, o in self._val])
        res = self.dm.assemble(seq, out)
        metrics = {k: v for k, v in score(res, self.dm, self.cfg.get("eval")).items()
                   if isinstance(v, float)}
        metrics["loss"] = float(torch.stack(self._val_loss).mean())
        self._val, self._val_loss = [], []
        self._last_val = {f"val/{k}": v for k, v in metrics.items()}
        self.log_dict(self._last_val, prog_bar=False)
        value = self._last_val.get(self.monitor)
        if value is not None and not self.trainer.sanity_checking and self._improved(value):
            self.best, self.best_epoch = value, self.current_epoch
            self._save("best.pt")

    def _improved(self, value: float) -> bool:
        if self.best is None or np.isnan(self.best):
            return not np.isnan(value)
        return value > self.best if self.mode == "max" else value < self.best

    def on_train_epoch_end(self) -> None:
        row: dict[str, Any] = {"epoch": self.current_epoch,
                               "lr": self.optimizers().param_groups[0]["lr"]}
        if self._train_loss:
            row["train/loss"] = float(torch.stack(self._train_loss).mean())
        self._train_loss = []
        row.update(self._last_val)
        self.history.append(row)
        self._write_history()
        if (self.cfg.get("output") or {}).get("verbose", True):
            shown = {k: v for k, v in row.items() if k in ("train/loss", "val/loss", self.monitor)}
            print(f"[{self.cfg.get('name')}] epoch {row['epoch']:3d}  "
                  + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()), flush=True)

    def on_train_end(self) -> None:
        self._save("last.pt")

    def _save(self, name: str) -> None:
        if self.run_dir is None:
            return
        d = self.run_dir / "checkpoints"
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(state, d / name)

    def _write_history(self) -> None:
        if self.run_dir is None or not self.history:
            return
        cols = list(dict.fromkeys(k for r in self.history for k in r))
        with open(self.run_dir / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(self.history)

    def configure_optimizers(self) -> Any:
        oc = dict(self.cfg.get("optim") or {})
        opt = OPTIMIZERS.build(oc.pop("name", "adam"), self.model.parameters(), **oc)
        sc = dict(self.cfg.get("schedule") or {})
        name = sc.pop("name", "none") or "none"
        sch = SCHEDULES.build(name, opt, monitor=self.monitor, mode=self.mode,
                              max_epochs=int(self.cfg["trainer"]["max_epochs"]),
                              base_lr=float(oc.get("lr", 1e-3)), **sc)
        if sch is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": sch}
