"""Temporal convolutional network as in LFAN (sucv/ABAW2, model/temporal_convolutional_model.py).

Level i has dilation 2^i. Each block: 2 x [weight-normed Conv1d (causal: pad (k-1)d on the
left, i.e. the reference's pad-then-chomp) -> LeakyReLU -> channel dropout], plus a residual
(1x1 conv when channels differ), then LeakyReLU. Defaults: kernel 5, dropout 0.1.

``init="xavier"`` (default, the spec): xavier-uniform with gain sqrt(2) on every conv; for
weight-normed convs it is applied to the direction and the magnitude reset so the effective
weight is the xavier draw. ``init="reference"`` reproduces what the released code actually
does: its xavier call hits the derived ``weight`` tensor of the old ``weight_norm`` and is
overwritten at the first forward, so only the 1x1 residual convs get xavier.

Mask-aware: invalid rows are zeroed at the input and after each block, so they act as the
zero padding the convolution sees at the sequence edge; appended padding changes nothing.

On valid rows the outputs equal the released ``TemporalConvNet`` with the same weights within
1e-5 (``tests/test_fusion_reference_numerics.py``); ``tcn_state_from_reference`` renames its
state dict (``weight_g``/``weight_v`` -> our weight-norm parametrization).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from avemo.fusion.models.base import TemporalModule, TemporalOutput, masked_mean, zero_invalid
from avemo.fusion.registry import TEMPORAL

INITS = ("xavier", "reference")
_REF_KEY = re.compile(
    r"network\.(\d+)\.(conv[12]\.weight_g|conv[12]\.weight_v|conv[12]\.bias"
    r"|downsample\.weight|downsample\.bias)"
)
_REF_PART = {
    "weight_g": "conv.parametrizations.weight.original0",
    "weight_v": "conv.parametrizations.weight.original1",
    "bias": "conv.bias",
}


def tcn_state_from_reference(
    state: Mapping[str, Tensor], ref_prefix: str = "", prefix: str = ""
) -> dict[str, Tensor]:
    """Rename a released ``TemporalConvNet`` state dict (keys under ``ref_prefix``) to ours.

    The released blocks also list conv1/conv2 under ``net.0``/``net.4`` (same tensors, kept
    twice by ``state_dict``); those duplicates are skipped.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(ref_prefix):
            continue
        found = _REF_KEY.fullmatch(key[len(ref_prefix) :])
        if found is None:
            continue
        layer, part = found.group(2).split(".")
        ours = f"{layer}.{part}" if layer == "downsample" else f"{layer}.{_REF_PART[part]}"
        out[f"{prefix}blocks.{found.group(1)}.{ours}"] = value
    return out


class _CausalConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, causal: bool) -> None:
        super().__init__()
        total = (kernel - 1) * dilation
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)
        self.conv = weight_norm(nn.Conv1d(c_in, c_out, kernel, dilation=dilation))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(nn.functional.pad(x, self.pad))


class TemporalBlock(nn.Module):
    """Two weight-normed dilated convs with LeakyReLU + channel dropout, residual, LeakyReLU."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        dilation: int,
        dropout: float,
        causal: bool = True,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        self.conv1 = _CausalConv(c_in, c_out, kernel, dilation, causal)
        self.conv2 = _CausalConv(c_out, c_out, kernel, dilation, causal)
        self.act1, self.act2, self.act = nn.LeakyReLU(), nn.LeakyReLU(), nn.LeakyReLU()
        self.drop1, self.drop2 = nn.Dropout1d(dropout), nn.Dropout1d(dropout)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        self._init(init)

    @torch.no_grad()
    def _init(self, init: str) -> None:
        if init not in INITS:
            raise ValueError(f"tcn init must be one of {INITS}, got {init!r}")
        gain = math.sqrt(2.0)
        if init == "xavier":
            for c in (self.conv1.conv, self.conv2.conv):
                p = c.parametrizations.weight
                v = torch.empty_like(p.original1)
                nn.init.xavier_uniform_(v, gain=gain)
                p.original1.copy_(v)
                p.original0.copy_(v.flatten(1).norm(dim=1).view_as(p.original0))
        if self.downsample is not None:
            nn.init.xavier_uniform_(self.downsample.weight, gain=gain)

    def forward(self, x: Tensor) -> Tensor:  # x [B, C, T]
        y = self.drop1(self.act1(self.conv1(x)))
        y = self.drop2(self.act2(self.conv2(y)))
        res = x if self.downsample is None else self.downsample(x)
        return self.act(y + res)


@TEMPORAL.register("tcn")
class TCN(TemporalModule):
    """LFAN's TCN: dilated causal weight-normed conv blocks; pooled = masked mean of outputs."""

    def __init__(
        self,
        in_dim: int,
        channels: list[int] | tuple[int, ...] = (128, 128, 128, 128),
        kernel: int = 5,
        dropout: float = 0.1,
        causal: bool = True,
        init: str = "xavier",
    ) -> None:
        super().__init__(in_dim)
        if not channels:
            raise ValueError("tcn needs at least one level in channels")
        blocks = []
        c_prev = self.in_dim
        for i, c in enumerate(channels):
            blocks.append(TemporalBlock(c_prev, int(c), int(kernel), 2**i, dropout, causal, init))
            c_prev = int(c)
        self.blocks = nn.ModuleList(blocks)
        self.out_dim = c_prev

    def forward(self, x: Tensor, mask: Tensor) -> TemporalOutput:
        m = mask.unsqueeze(1)  # [B, 1, T]
        y = zero_invalid(x, mask).transpose(1, 2)
        for block in self.blocks:
            y = zero_invalid(block(y), m)  # m [B, 1, T] broadcasts over channels
        seq = y.transpose(1, 2)
        return TemporalOutput(seq, masked_mean(seq, mask))
