"""Optimisers and learning-rate schedules (registered in ``OPTIMIZERS`` / ``SCHEDULES``).

Every option a config may set is a named parameter, so ``load_config`` can check
``optim.*`` / ``schedule.*`` keys against these signatures before a run starts. Schedules
also receive what only the trainer knows (``SCHEDULE_INJECTED``: optimiser, monitor, mode,
max_epochs, base_lr) and ignore what they do not need.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from avemo.fusion.config import ConfigError, OptimGroup
from avemo.fusion.registry import OPTIMIZERS, SCHEDULES

Betas = tuple[float, float] | list[float]


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def param_groups(model: nn.Module, groups: Mapping[str, OptimGroup]) -> list[dict[str, Any]]:
    """The model's trainable parameters as torch parameter groups: one per ``optim.groups``
    prefix (its ``lr`` / ``weight_decay`` where set) plus one for the rest (the optimiser's
    own settings). A parameter under several prefixes goes to the longest one. A prefix that
    names no parameter is a config mistake (a renamed module would else silently get the
    default decay): ``ConfigError`` listing the model's modules."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    by_prefix: dict[str, list[nn.Parameter]] = {k: [] for k in groups}
    rest: list[nn.Parameter] = []
    for name, p in named:
        hits = [k for k in groups if _under(name, k)]
        (by_prefix[max(hits, key=len)] if hits else rest).append(p)
    empty = [k for k, ps in by_prefix.items() if not ps]
    if empty:
        mods = sorted({n.rsplit(".", 1)[0] for n, _ in named if "." in n})
        shown = [m for m in mods if m.count(".") <= 1] or mods
        raise ConfigError(
            f"optim.groups.{empty[0]}: no trainable parameter of model "
            f"{type(model).__name__} is under this prefix; modules: {', '.join(shown[:30])}"
        )
    out: list[dict[str, Any]] = [{"params": rest}] if rest else []
    for k, ps in by_prefix.items():
        set_ = {f: v for f, v in groups[k].model_dump().items() if v is not None}
        out.append({"params": ps, **set_})
    return out


def _adam_family(
    cls: type[torch.optim.Adam] | type[torch.optim.AdamW],
    params: Any,
    lr: float,
    weight_decay: float,
    betas: Betas,
    eps: float,
    amsgrad: bool,
) -> torch.optim.Optimizer:
    b1, b2 = betas  # a YAML list or a tuple: torch wants a pair of floats
    return cls(
        params,
        lr=lr,
        weight_decay=weight_decay,
        betas=(float(b1), float(b2)),
        eps=eps,
        amsgrad=amsgrad,
    )


@OPTIMIZERS.register("adam")
def adam(
    params: Any,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    amsgrad: bool = False,
) -> torch.optim.Optimizer:
    """Adam (L2 penalty through weight_decay)."""
    return _adam_family(torch.optim.Adam, params, lr, weight_decay, betas, eps, amsgrad)


@OPTIMIZERS.register("adamw")
def adamw(
    params: Any,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    amsgrad: bool = False,
) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    return _adam_family(torch.optim.AdamW, params, lr, weight_decay, betas, eps, amsgrad)


@OPTIMIZERS.register("sgd")
def sgd(
    params: Any,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    dampening: float = 0.0,
) -> torch.optim.Optimizer:
    """SGD with momentum (0.9 by default)."""
    return torch.optim.SGD(
        params,
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        nesterov=nesterov,
        dampening=dampening,
    )


@SCHEDULES.register("none")
def constant(opt: torch.optim.Optimizer, **_: Any) -> None:
    """Constant learning rate."""
    return None


@SCHEDULES.register("plateau")
def plateau(
    opt: torch.optim.Optimizer,
    monitor: str,
    mode: str,
    factor: float = 0.1,
    patience: int = 5,
    min_lr: float = 0.0,
    **_: Any,
) -> dict[str, Any]:
    """Decay by ``factor`` when the monitored metric stalls for ``patience`` epochs."""
    if mode not in ("min", "max"):
        raise ValueError(f"plateau mode must be 'min' or 'max', got {mode!r}")
    sch = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min" if mode == "min" else "max", factor=factor, patience=patience, min_lr=min_lr
    )
    return {"scheduler": sch, "monitor": monitor, "interval": "epoch"}


@SCHEDULES.register("cosine")
def cosine(
    opt: torch.optim.Optimizer, max_epochs: int, eta_min: float = 0.0, **_: Any
) -> dict[str, Any]:
    """Cosine annealing over max_epochs."""
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, max_epochs), eta_min=eta_min)
    return {"scheduler": sch, "interval": "epoch"}


def jca_reference_lr(
    epoch: int,
    lr_start: float = 1e-4,
    lr_jump: float = 1e-3,
    gamma: float = 0.8,
    step: int = 2,
    jump_epoch: int = 5,
) -> float:
    """JCA's released schedule (its train.py, epochs counted from 0): lr_start (the optimiser's
    config lr) up to and including epoch ``jump_epoch``, then lr_jump * gamma^floor((epoch - 5) / 2)
    -- the released code decays only ``if epoch > learning_rate_decay_start``."""
    if epoch <= jump_epoch:
        return lr_start
    return lr_jump * gamma ** math.floor((epoch - jump_epoch) / step)


@SCHEDULES.register("jca_reference")
def jca_reference(
    opt: torch.optim.Optimizer,
    base_lr: float,
    lr_start: float = 1e-4,
    lr_jump: float = 1e-3,
    gamma: float = 0.8,
    step: int = 2,
    jump_epoch: int = 5,
    **_: Any,
) -> dict[str, Any]:
    """JCA: 1e-4 for epochs 0-5, then 1e-3 * 0.8^floor((epoch-5)/2) after epoch 5."""

    def factor(epoch: int) -> float:
        return jca_reference_lr(epoch, lr_start, lr_jump, gamma, step, jump_epoch) / base_lr

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "epoch"}
