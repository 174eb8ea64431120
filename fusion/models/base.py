"""Contracts shared by every stage-two module: masks, outputs, heads, the model base class.

Batch contract (what the datamodule hands a model)::

    batch = {modality: float Tensor [B, T_m, *row_shape],
             f"{modality}_mask": bool Tensor [B, T_m]}   # True = valid row

A missing ``*_mask`` means "all rows valid". Models get the task as a ``fusion.spec.TaskSpec``
and return clip logits ``[B, n_out]`` for a clip-level task and ``[B, T, n_out]`` for a
frame-level one (``spec.frame``; all modalities then share one timeline ``T``). ``model.attention`` holds the last forward's temporal attention weights
``{name: [B, T]}`` for reports.

Mask rule used everywhere: a row whose mask is False never influences any output at a valid
row or any pooled output; values there may be anything (even NaN).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from avemo.fusion.models.dropout import Dropout
from avemo.fusion.registry import load_all
from avemo.fusion.spec import TaskSpec


def get_mask(batch: Mapping[str, Tensor], modality: str) -> Tensor:
    """The modality's row mask, all-True when the batch carries none."""
    x = batch[modality]
    m = batch.get(f"{modality}_mask")
    if m is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return m.to(device=x.device, dtype=torch.bool)


#: integer dtype of each float width: AND with all-ones / all-zeros words keeps / zeroes a value
_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _and_bits(x: Tensor, keep: Tensor) -> Tensor:
    return (x.view(keep.dtype) & keep).view(x.dtype)


class _ZeroRows(torch.autograd.Function):
    """``where(mask, x, 0)`` as a bitwise AND: NaN/inf at masked rows become +0.0 bit for bit,
    at the cost of a multiply (CPU ``where`` with a broadcast bool mask is ~6x slower: it is
    most of a mean-pooling model's step). The gradient is masked the same way."""

    generate_vmap_rule = True  # stacked grid cells run models under torch.func.vmap

    @staticmethod
    def forward(x: Tensor, keep: Tensor) -> Tensor:
        return _and_bits(x, keep)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (keep,) = ctx.saved_tensors
        return _and_bits(grad.contiguous(), keep), None


def keep_bits(mask: Tensor, x: Tensor) -> Tensor | None:
    """``mask`` as all-ones / all-zeros integer words of ``x``'s width, broadcastable to ``x``
    (None where the bitwise path does not apply: other devices, non-float ``x``)."""
    bits = _BITS.get(x.element_size()) if x.is_floating_point() else None
    if bits is None or x.device.type != "cpu":
        return None
    m = mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim()))
    return -(m.to(bits))  # True -> -1 (every bit set), False -> 0


def zero_invalid_(x: Tensor, mask: Tensor) -> Tensor:
    """``zero_invalid`` in place, for tensors outside autograd (a batch being built)."""
    keep = keep_bits(mask, x)
    if keep is not None:
        x.view(keep.dtype).bitwise_and_(keep)
        return x
    return x.masked_fill_(~mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim())), 0.0)


def zero_invalid(x: Tensor, mask: Tensor) -> Tensor:
    """Set rows with mask False to 0 such that NaN/inf there cannot leak (on a CPU a bitwise
    AND, elsewhere ``where``; the same values and gradients)."""
    keep = keep_bits(mask, x)
    if keep is not None:
        return _ZeroRows.apply(x, keep)
    m = mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim()))
    return torch.where(m, x, 0.0)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid rows of ``x [B, T, D]``; a sequence with no valid row gives zeros."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (zero_invalid(x, mask) * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max over valid rows of ``x [B, T, D]``; a sequence with no valid row gives zeros."""
    filled = x.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    out = filled.max(1).values
    return torch.where(mask.any(1, keepdim=True), out, torch.zeros_like(out))


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over valid entries only; all-invalid rows give all-zero weights (not NaN)."""
    filled = logits.masked_fill(~mask, float("-inf"))
    any_valid = mask.any(dim, keepdim=True)
    filled = torch.where(any_valid, filled, torch.zeros_like(filled))
    return torch.softmax(filled, dim) * mask.to(logits.dtype)


def last_valid_length(mask: Tensor) -> Tensor:
    """Index of the last valid row + 1 per sequence (0 when none)."""
    t = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (t * mask.long()).max(1).values


def fit_length(x: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Map a sequence of ``T'`` rows onto ``length`` rows (nearest row; no interpolation).

    Upsampling (an encoder that pooled time, e.g. the audio CNN, feeding a frame task) repeats
    each row ``ceil(length / T')`` times and cuts, matching the pooling windows; downsampling
    (aligning a longer stream onto a shorter one) takes the row nearest each target centre.
    """
    t = x.shape[1]
    if t == length:
        return x, mask
    if t == 0:
        shape = (x.shape[0], length, *x.shape[2:])
        return x.new_zeros(shape), mask.new_zeros((x.shape[0], length))
    if t < length:
        rep = -(-length // t)
        return x.repeat_interleave(rep, dim=1)[:, :length], mask.repeat_interleave(rep, dim=1)[
            :, :length
        ]
    idx = ((torch.arange(length, device=x.device) + 0.5) * t / length).long().clamp_max(t - 1)
    return x[:, idx], mask[:, idx]


@dataclass
class TemporalOutput:
    """What every TEMPORAL module returns.

    ``seq [B, T, out_dim]`` per-frame features (for frame tasks), ``pooled [B, out_dim]`` one
    vector per sequence (for clip tasks), ``attention [B, T]`` or None.
    """

    seq: Tensor
    pooled: Tensor
    attention: Tensor | None = None


@dataclass
class EncoderOutput:
    """What every ENCODER returns: a row sequence, its mask, optional attention cells.

    ``cells [B, N, C]`` / ``cells_mask [B, N]``: the items attention-guided FBP attends over
    (time-frequency cells of the audio CNN's last map; for vector encoders the rows).
    """

    seq: Tensor
    mask: Tensor
    cells: Tensor | None = None
    cells_mask: Tensor | None = None


class TemporalModule(nn.Module):
    """Base for TEMPORAL modules: ``forward(x [B,T,in_dim], mask [B,T]) -> TemporalOutput``."""

    out_dim: int
    #: Set by a model that reads only ``pooled`` (clip tasks): a module may then skip work
    #: that only ``seq`` needs (dropout on ``seq``); ``seq`` stays valid without it.
    pooled_only: bool = False

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = int(in_dim)


class Encoder(nn.Module):
    """Base for ENCODERS: ``forward(x [B,T,*row], mask [B,T]) -> EncoderOutput``."""

    out_dim: int
    cell_dim: int
    #: input rows per output step: output step j covers rows [j*s, (j+1)*s) (ceil mode), so
    #: attention over the output can be placed in time (``fusion.plots.attention_positions``)
    time_stride: int = 1


class Head(nn.Module):
    """Task head: optional hidden layers, then ``Linear(-> n_out)``.

    Classification heads give n-class logits; regression heads give one value per target
    (per frame for frame tasks). Works on ``[..., in_dim]``.
    """

    def __init__(
        self,
        in_dim: int,
        n_out: int,
        hidden: list[int] | tuple[int, ...] = (),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        acts = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "none": nn.Identity}
        if activation not in acts:
            raise ValueError(f"head activation must be one of {sorted(acts)}, got {activation!r}")
        layers: list[nn.Module] = []
        d = int(in_dim)
        for h in hidden:
            layers += [nn.Linear(d, int(h)), acts[activation](), Dropout(dropout)]
            d = int(h)
        if not hidden and dropout:
            layers.append(Dropout(dropout))
        layers.append(nn.Linear(d, int(n_out)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FusionModel(nn.Module):
    """Base for MODELS: validates inputs/task and keeps ``attention`` for reports.

    A model that is an ensemble of members trained independently (``descriptors``' ``late``)
    fills ``member_outputs`` in each training forward: the trainer then takes the mean of the
    members' own losses instead of the loss of the combined output, so each member learns as
    it would alone (same batches; the mean only scales each member's gradient by 1 / M).
    """

    def __init__(self, inputs: Mapping[str, tuple[int, ...]], task: TaskSpec) -> None:
        super().__init__()

        load_all()  # sub-modules are built by name; make sure every name is registered
        if not inputs:
            raise ValueError("a model needs at least one input modality")
        self.inputs = {str(k): tuple(int(d) for d in v) for k, v in inputs.items()}
        self.task = TaskSpec.coerce(task)
        self.attention: dict[str, Tensor] = {}
        self.member_outputs: list[Tensor] = []

    @property
    def has_members(self) -> bool:
        """True when training forwards fill ``member_outputs`` (independently trained members)."""
        return False

    @property
    def frame_task(self) -> bool:
        return self.task.frame

    def need(self, modality: str, role: str) -> tuple[int, ...]:
        """Row shape of a modality the config assigned to ``role``; clear error if absent."""
        if modality not in self.inputs:
            raise ValueError(
                f"{role}: modality {modality!r} is not among the inputs {sorted(self.inputs)}"
            )
        return self.inputs[modality]

    def check_batch(self, batch: Mapping[str, Tensor], modalities: list[str]) -> None:
        missing = [m for m in modalities if m not in batch]
        if missing:
            raise KeyError(f"batch lacks modalities {missing}; it has {sorted(batch)}")


def out_dim(module: nn.Module) -> int:
    """A sub-module's ``out_dim`` (every branch, encoder, temporal module and fusion declares one),
    read through a container (``ModuleDict``) that types its items as plain modules."""
    dim: object = getattr(module, "out_dim", None)
    if not isinstance(dim, int):
        raise TypeError(f"{type(module).__name__} declares no integer out_dim")
    return dim


def as_list(x: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


def sub_cfg(cfg: Mapping[str, Any] | str | None, default_name: str) -> tuple[str, dict[str, Any]]:
    """``{"name": n, **kw}`` or a bare name -> (name, kwargs)."""
    if cfg is None:
        return default_name, {}
    if isinstance(cfg, str):
        return cfg, {}
    kw = dict(cfg)
    return str(kw.pop("name", default_name)), kw


def per_modality(
    cfg: Mapping[str, Any] | str | None, modality: str
) -> Mapping[str, Any] | str | None:
    """Allow ``{"per_modality": {face: {...}}, **default}`` to override a sub-config per modality."""
    if isinstance(cfg, Mapping) and "per_modality" in cfg:
        base = {k: v for k, v in cfg.items() if k != "per_modality"}
        over = cfg["per_modality"].get(modality)
        if over is None:
            return base
        if isinstance(over, str):
            return {**base, "name": over}
        return {**base, **over}
    return cfg
