"""LFAN: leader-follower attentive fusion with TCNs (Su Zhang et al., ABAW2 2021; sucv/ABAW2).

Visual leads; any number of audio streams follow. Each modality runs its own TCN (visual
channels [128]*4, audio [32]*4, kernel 5, dropout 0.1). At every time step, across the M
modalities (not across time): K_m, Q_m, V_m = Linear(-> 32) of each TCN output; stacked to
M x 32; A = softmax(K Q^T / sqrt(32)) over the last axis; O = LayerNorm([M, 32])(A V + V).
Output per frame = Linear(C_v + M*32 -> n_out)([h_v ; flatten(O)]). The reference trains one
model per target (n_out = 1). Clip tasks average per-frame outputs over valid visual frames.
``model.attention[m]`` = attention each modality receives per step (mean over queries).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from avemo.fusion.models.base import FusionModel, as_list, fit_length, get_mask
from avemo.fusion.models.tcn import TCN
from avemo.fusion.registry import MODELS


@MODELS.register("lfan")
class LFAN(FusionModel):
    """Leader-follower attentive fusion: per-modality TCNs + per-step cross-modal attention."""

    def __init__(self, inputs: Mapping[str, tuple[int, ...]], task: Mapping[str, Any],
                 visual: str = "face", audio: str | list[str] | None = None,
                 visual_channels: list[int] | tuple[int, ...] = (128, 128, 128, 128),
                 audio_channels: list[int] | tuple[int, ...] = (32, 32, 32, 32),
                 kernel: int = 5, dropout: float = 0.1, att_dim: int = 32,
                 tcn_init: str = "xavier") -> None:
        super().__init__(inputs, task)
        self.visual = visual
        self.need(visual, "lfan.visual")
        self.audio = as_list(audio) or [m for m in self.inputs if m != visual]
        if not self.audio:
            raise ValueError("lfan: needs at least one audio (follower) modality")
        self.modalities = [visual, *self.audio]
        self.tcns = nn.ModuleDict()
        for m in self.modalities:
            ch = visual_channels if m == visual else audio_channels
            self.tcns[m] = TCN(math.prod(self.need(m, "lfan")), ch, kernel, dropout, True, tcn_init)
        self.key = nn.ModuleDict({m: nn.Linear(self.tcns[m].out_dim, att_dim) for m in self.modalities})
        self.query = nn.ModuleDict({m: nn.Linear(self.tcns[m].out_dim, att_dim) for m in self.modalities})
        self.value = nn.ModuleDict({m: nn.Linear(self.tcns[m].out_dim, att_dim) for m in self.modalities})
        n_mod = len(self.modalities)
        self.att_dim = int(att_dim)
        self.norm = nn.LayerNorm([n_mod, att_dim])
        self.regressor = nn.Linear(self.tcns[visual].out_dim + n_mod * att_dim, self.task["n_out"])

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        self.check_batch(batch, self.modalities)
        vmask = get_mask(batch, self.visual)
        t = vmask.shape[1]
        h = {}
        for m in self.modalities:
            x, mask = fit_length(batch[m].flatten(2), get_mask(batch, m), t)
            h[m] = self.tcns[m](x, mask).seq
        k = torch.stack([self.key[m](h[m]) for m in self.modalities], dim=-2)  # [B, T, M, d]
        q = torch.stack([self.query[m](h[m]) for m in self.modalities], dim=-2)
        v = torch.stack([self.value[m](h[m]) for m in self.modalities], dim=-2)
        att = torch.softmax(k @ q.transpose(-1, -2) / math.sqrt(self.att_dim), dim=-1)
        fused = self.norm(att @ v + v).flatten(-2)
        out = self.regressor(torch.cat([h[self.visual], fused], dim=-1))  # [B, T, n_out]
        received = att.mean(-2)  # [B, T, M]
        self.attention = {m: received[..., i] for i, m in enumerate(self.modalities)}
        if self.frame_task:
            return out
        w = vmask.to(out.dtype).unsqueeze(-1)
        return (out * w).sum(1) / w.sum(1).clamp_min(1.0)
