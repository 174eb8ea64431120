"""The LightningModule: loss, optimiser + LR schedule, per-epoch validation metrics, checkpoints.

Validation outputs are assembled by the datamodule (clip scores, or per-frame averages of
overlapping windows) and scored over the whole partition, as the papers report them.
Checkpoints are plain ``state_dict`` files of the model (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from avemo.fusion.config import RunConfig
from avemo.fusion.datamodule import CachedFeatureDataModule
from avemo.fusion.evaluate import _is_input, score
from avemo.fusion.mixup import Mixup
from avemo.fusion.optim import (
    jca_reference_lr,  # noqa: F401 - re-exported
    param_groups,
)
from avemo.fusion.registry import OPTIMIZERS, SCHEDULES


def build_loss(cfg: RunConfig, dm: CachedFeatureDataModule) -> nn.Module:
    """The run's loss: ``loss.name`` (default: the task's) with its options (class weights
    from the training targets)."""
    task = dm.task
    return task.build_loss(cfg.loss, task.train_targets(dm.index, dm.part_seqs["train"]))


# ----------------------------------------------------------------------------- module


class FusionModule(L.LightningModule):
    """Wraps a zoo model; logs ``train/loss`` (batch-size weighted epoch mean), ``val/loss`` and
    ``val/<metric>`` once per epoch.

    Checkpoints, the metrics history and progress output are callbacks (``fusion.callbacks``);
    ``last_val`` holds the latest validation metrics for them.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: RunConfig,
        dm: CachedFeatureDataModule,
        run_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.dm = dm
        self.task = dm.task
        self.loss_fn = build_loss(cfg, dm)
        self.monitor, self.mode = self.task.monitor(cfg.trainer)
        self.run_dir = Path(run_dir) if run_dir else None
        self._val: list[tuple[Tensor, Tensor]] = []
        self._val_loss: list[Tensor] = []
        self._train_loss: list[Tensor] = []
        self._train_n = 0
        self.last_val: dict[str, float] = {}
        self.last_val_res: dict[str, Any] | None = None  # the last validation pass, assembled
        mix = cfg.trainer.mixup
        self.mixup = Mixup(model, mix) if mix is not None else None  # a bad `at`: ConfigError

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.model({k: v for k, v in batch.items() if _is_input(k, self.dm.modalities)})

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        if self.mixup is None:
            out = self(batch)
            loss = self._members_loss(out, lambda o: self.task.batch_loss(self.loss_fn, o, batch))
        else:
            lam, perm = self.mixup.draw(len(batch["index"]), batch["index"].device)
            with self.mixup.mixing(lam, perm):
                out = self(batch)
            loss = Mixup.loss(
                lambda o, b: self.task.batch_loss(self.loss_fn, o, b), out, batch, lam, perm
            )
        n = len(batch["index"])  # the epoch mean is logged once, at its end: self.log per step
        self._train_loss.append(loss.detach() * n)  # cost ~0.7 ms (profiled), as much as a
        self._train_n += n  # small model's whole step
        return loss

    def _members_loss(self, out: Tensor, loss_of: Callable[[Tensor], Tensor]) -> Tensor:
        """The loss of ``out``, or, for a model of independently trained members
        (``FusionModel.member_outputs``), the mean of each member's own loss."""
        members = getattr(self.model, "member_outputs", None)
        if not members:
            return loss_of(out)
        return torch.stack([loss_of(o) for o in members]).mean()

    def on_train_epoch_end(self) -> None:
        if self._train_n:
            mean = torch.stack(self._train_loss).sum() / self._train_n
            self._publish({"train/loss": float(mean)})
        self._train_loss, self._train_n = [], 0

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Batches are built on the training device (``DeviceBatches``): no per-step walk."""
        return batch

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
        self.last_val_res = res
        metrics = {
            k: v for k, v in score(res, self.dm, self.cfg.eval).items() if isinstance(v, float)
        }
        metrics["loss"] = float(torch.stack(self._val_loss).mean())
        self._val, self._val_loss = [], []
        self.last_val = {f"val/{k}": v for k, v in metrics.items()}
        self._publish(self.last_val)

    def _publish(self, metrics: Mapping[str, float]) -> None:
        """What ``self.log_dict(..., on_epoch=True)`` does for once-per-epoch floats: the
        trainer's ``callback_metrics`` (early stopping, plateau schedules) and one row per
        call to every logger, at the step Lightning logs it -- without Lightning's per-metric
        result bookkeeping, ~1 ms per metric per epoch (a fifth of a small model's fit time
        over a plain loop; ``python -m avemo.bench --only fusion --overhead``)."""
        t = self.trainer
        if t is None or getattr(t, "sanity_checking", False):
            return
        t.callback_metrics.update({k: torch.tensor(float(v)) for k, v in metrics.items()})
        row = {**{k: float(v) for k, v in metrics.items()}, "epoch": t.current_epoch}
        step = max(t.global_step - 1, 0)
        for logger in t.loggers:
            logger.log_metrics(row, step=step)
            logger.save()

    def configure_optimizers(self) -> Any:
        optim, schedule = self.cfg.optim, self.cfg.schedule
        params = param_groups(self.model, optim.groups) if optim.groups else self.model.parameters()
        opt = OPTIMIZERS.build(optim.name, params, **optim.options())
        sch = SCHEDULES.build(
            schedule.name,
            opt,
            monitor=self.monitor,
            mode=self.mode,
            max_epochs=self.cfg.trainer.max_epochs,
            base_lr=optim.lr,
            **schedule.options(),
        )
        if sch is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": sch}
