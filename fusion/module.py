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
from avemo.fusion.registry import LOSS_ALIASES, OPTIMIZERS, SCHEDULES

# ----------------------------------------------------------------------------- losses


def class_weights(spec: Any, y: Tensor, n: int) -> list[float] | None:
    """``balanced`` -> N / (C * count_c) from the training labels; a list is used as given."""
    if spec is None:
        return None
    if spec == "balanced":
        counts = torch.bincount(y.cpu(), minlength=n).double()
        return (counts.sum() / (n * counts.clamp_min(1))).tolist()
    w = [float(v) for v in spec]
    if len(w) != n:
        raise ValueError(f"loss.class_weights has {len(w)} values for {n} classes")
    return w


def build_loss(cfg: Mapping[str, Any], dm: CachedFeatureDataModule) -> nn.Module:
    """``LOSSES`` entry named by ``loss.name`` (default cross_entropy / ccc), with its options."""
    from avemo.fusion import losses  # noqa: F401 - registers the losses
    from avemo.fusion.registry import LOSSES

    lc = dict(cfg.get("loss") or {})
    name = lc.pop("name", None) or ("cross_entropy" if dm.task_type == "clip" else "ccc")
    name = LOSS_ALIASES.get(name, name)
    spec = lc.pop("class_weights", None)
    if name == "cross_entropy":
        lc["class_weights"] = class_weights(spec, dm.tables.y[dm.part_seqs["train"]], dm.n_out)
    else:
        lc.pop("label_smoothing", None)
    return LOSSES.build(name, **lc)


def batch_loss(loss_fn: nn.Module, out: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
    """Clip: loss(logits, y). Frame: loss(pred, y, frames where every target is labelled)."""
    if "y_mask" in batch:
        return loss_fn(out, batch["y"], batch["y_mask"].all(-1))
    return loss_fn(out, batch["y"])


def monitor_of(cfg: Mapping[str, Any], task_type: str) -> tuple[str, str]:
    """(metric name, mode): default val/accuracy for clip tasks, val/ccc for frame tasks."""
    mon = cfg["trainer"].get("monitor") or ("val/accuracy" if task_type == "clip" else "val/ccc")
    return mon, ("min" if mon.endswith("loss") or "rmse" in mon else "max")


# ----------------------------------------------------------------------------- module


class FusionModule(L.LightningModule):
    """Wraps a zoo model; logs ``train/loss``, ``val/loss`` and ``val/<metric>`` every epoch."""

    def __init__(self, model: nn.Module, cfg: Mapping[str, Any], dm: CachedFeatureDataModule,
                 run_dir: Path | None = None) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.dm = dm
        self.loss_fn = build_loss(cfg, dm)
        self.monitor, self.mode = monitor_of(cfg, dm.task_type)
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
        loss = batch_loss(self.loss_fn, out, batch)
        self._train_loss.append(loss.detach())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["index"]))
        return loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        out = self(batch)
        self._val_loss.append(batch_loss(self.loss_fn, out, batch).detach())
        self._val.append((batch["index"], out.detach().float()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        seq = torch.cat([s for s, _ in self._val])
        out = torch.cat([o for _, o in self._val])
        res = self.dm.assemble(seq, out)
        res = {k: (v.cpu().numpy() if isinstance(v, Tensor) else v) for k, v in res.items()}
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
