"""Weight averaging (SWA, Izmailov et al. 2018) for stage-two runs: ``trainer.swa``.

From epoch ``floor(start * max_epochs)`` on, the weights at the end of every epoch are averaged
(``torch.optim.swa_utils.AveragedModel``, an equal-weight running mean); after the fit they
replace the model's, batch-norm statistics are recomputed for them over the training batches
(the averaged weights never produced the running statistics they would carry), and the run is
scored with them and saves them as ``checkpoints/swa.pt``. The LR follows the run's own
schedule (``schedule: none`` gives the paper's constant-LR tail; cosine averages its decay).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from avemo.fusion.config import SwaConfig


def first_epoch(cfg: SwaConfig, max_epochs: int) -> int:
    """The first epoch (0-based) whose end weights enter the average."""
    return min(int(cfg.start * max_epochs), max_epochs - 1)


class WeightAveraging(L.Callback):
    """Running mean of the model's parameters over the epochs from ``first`` on."""

    def __init__(self, first: int) -> None:
        self.first = int(first)
        self.average: AveragedModel | None = None
        self.epochs: list[int] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch < self.first or trainer.sanity_checking:
            return
        model = getattr(module, "model", module)
        if self.average is None:
            self.average = AveragedModel(model, use_buffers=False)
        self.average.update_parameters(model)
        self.epochs.append(int(trainer.current_epoch))

    def apply(
        self, model: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any]
    ) -> bool:
        """Copy the averaged parameters into ``model`` and refresh its batch-norm statistics
        over ``batches`` (``forward(batch)`` runs the model on one); False: nothing averaged."""
        if self.average is None:
            return False
        with torch.no_grad():
            for dst, src in zip(model.parameters(), self.average.module.parameters(), strict=True):
                dst.copy_(src)
        refresh_batch_norm(model, batches, forward)
        return True

    def record(self) -> dict[str, Any]:
        return {
            "epochs": [self.epochs[0], self.epochs[-1]] if self.epochs else [],
            "n": len(self.epochs),
        }


def refresh_batch_norm(
    model: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any]
) -> None:
    """Batch-norm running statistics recomputed as the plain mean over ``batches`` (momentum
    None, as ``torch.optim.swa_utils.update_bn``, which cannot take dict batches); a model
    without batch norm is left untouched and no batch is read."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    with torch.no_grad():
        for batch in batches:
            forward(batch)
    for m in norms:
        m.momentum = momenta[m]
    model.train(was_training)


__all__ = ["WeightAveraging", "first_epoch", "refresh_batch_norm"]
