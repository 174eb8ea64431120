"""Mixup at a module's input (manifold mixup, Verma et al. 2019) for stage-two training steps.

Every training batch draws ``lambda ~ Beta(alpha, alpha)`` and a permutation of its samples; the
input of the module named by ``trainer.mixup.at`` (default the task head) becomes
``lambda * x + (1 - lambda) * x[perm]`` and the loss ``lambda * L(y) + (1 - lambda) * L(y[perm])``
(Zhang et al. 2018). The input of a module, not the raw rows: the rows of two clips are not
aligned in time, while a head sees one vector per clip (or per frame of equal-length windows).
Draws come from torch's global generator, so a seeded run repeats exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from avemo.fusion.config import ConfigError, MixupConfig

#: Batch keys that hold targets (permuted with the samples for the second loss term).
TARGET_KEYS = ("y", "y_mask")


def mixup_module(model: nn.Module, at: str) -> nn.Module:
    """The module named ``at``; a name the model lacks is a ``ConfigError`` listing its modules."""
    modules = dict(model.named_modules())
    if at in modules and at:
        return modules[at]
    names = [n for n in modules if n and "." not in n]
    raise ConfigError(
        f"trainer.mixup.at: {at!r} names no module of {type(model).__name__}; its modules are "
        f"{', '.join(names) or '(none)'} (nested ones as parent.child)"
    )


class Mixup:
    """Pairwise mixing of one module's training inputs and of the loss's targets."""

    def __init__(self, model: nn.Module, cfg: MixupConfig) -> None:
        self.at, self.alpha = cfg.at, float(cfg.alpha)
        if getattr(model, "has_members", False):  # each member has its own input and loss
            raise ConfigError(
                "trainer.mixup: the model has independently trained members (model.late); "
                "mixup mixes one module's input -- drop trainer.mixup or model.late"
            )
        self.module = mixup_module(model, cfg.at)
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))

    def draw(self, n: int, device: torch.device) -> tuple[float, Tensor]:
        """(lambda, permutation) for a batch of ``n`` samples (torch's global generator)."""
        lam = float(self._beta.sample())
        return lam, torch.randperm(n).to(device)

    @contextmanager
    def mixing(self, lam: float, perm: Tensor) -> Iterator[None]:
        """Within the block, the module's first input is mixed with its permuted self."""

        def pre(_mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0] if args else None
            if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[0] != len(perm):
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ConfigError(
                    f"trainer.mixup.at: the input of {self.at!r} is not one row per sample of "
                    f"the batch of {len(perm)} (got {got}); name the module that sees one "
                    "vector per clip, e.g. head"
                )
            return (lam * x + (1.0 - lam) * x[perm], *args[1:])

        handle = self.module.register_forward_pre_hook(pre)
        try:
            yield
        finally:
            handle.remove()

    @staticmethod
    def loss(
        batch_loss: Callable[[Tensor, Mapping[str, Tensor]], Tensor],
        out: Tensor,
        batch: Mapping[str, Tensor],
        lam: float,
        perm: Tensor,
    ) -> Tensor:
        """``lam * L(out, y) + (1 - lam) * L(out, y[perm])``, ``L`` the task's batch loss."""
        other = {**batch, **{k: batch[k][perm] for k in TARGET_KEYS if k in batch}}
        return lam * batch_loss(out, batch) + (1.0 - lam) * batch_loss(out, other)


__all__ = ["Mixup", "mixup_module", "TARGET_KEYS"]
