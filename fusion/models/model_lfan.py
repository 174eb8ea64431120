"""LFAN: leader-follower attentive fusion with TCNs (Su Zhang et al., ABAW2 2021; sucv/ABAW2).

Visual leads; any number of audio streams follow. Each modality runs its own TCN (visual
channels [128]*4, audio [32]*4, kernel 5, dropout 0.1). At every time step, across the M
modalities (not across time): K_m, Q_m, V_m = Linear(-> 32) of each TCN output; stacked to
M x 32; A = softmax(K Q^T / sqrt(32)) over the last axis; O = LayerNorm([M, 32])(A V + V).
Output per frame = Linear(C_v + M*32 -> n_out)([h_v ; flatten(O)]). The reference trains one
model per target (n_out = 1). Clip tasks average per-frame outputs over valid visual frames.
``model.attention[m]`` = attention each modality receives per step (mean over queries).

``attention="paper"`` (default, the spec): every modality's K, Q and V are projections of its
TCN output, as the paper writes them. ``attention="reference"``: the released forward
(``my_2d1ddy.forward``), which overwrites each follower's TCN output with its key projection
before computing that follower's query and value, so a follower's Q_m = Linear(32 -> 32)(K_m)
and V_m likewise, while the leader's Q and V come from its TCN output. The published ABAW2
numbers (test CCC valence 0.463 / arousal 0.492) were produced by that released code, so
``workflows/configs/lfan.yaml`` uses ``attention: reference``; outputs equal the released
module's within 1e-5 (``tests/test_fusion_reference_numerics.py``, fixtures made from the
reference code by ``tests/fixtures/make_reference_fusion.py``). Released checkpoints load
with ``model.load_state_dict(model.state_from_reference(sd))``. ``audio_encoder`` (optional; a
name or ``{name, ..., per_modality: {...}}``) maps a follower's rows first, e.g. ``layer_weights``
over a ``speech_*`` set's cached layers; without it rows are flattened, as the reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from avemo.fusion.models.base import (
    FusionModel,
    as_list,
    fit_length,
    get_mask,
    out_dim,
    per_modality,
    sub_cfg,
)
from avemo.fusion.models.temporal_tcn import TCN, tcn_state_from_reference
from avemo.fusion.registry import ENCODERS, MODELS
from avemo.fusion.spec import TaskSpec

ATTENTIONS = ("paper", "reference")


@MODELS.register("lfan")
class LFAN(FusionModel):
    """Leader-follower attentive fusion: per-modality TCNs + per-step cross-modal attention."""

    def __init__(
        self,
        inputs: Mapping[str, tuple[int, ...]],
        task: TaskSpec,
        visual: str = "face",
        audio: str | list[str] | None = None,
        visual_channels: list[int] | tuple[int, ...] = (128, 128, 128, 128),
        audio_channels: list[int] | tuple[int, ...] = (32, 32, 32, 32),
        kernel: int = 5,
        dropout: float = 0.1,
        att_dim: int = 32,
        tcn_init: str = "xavier",
        attention: str = "paper",
        audio_encoder: Any = None,
    ) -> None:
        super().__init__(inputs, task)
        if attention not in ATTENTIONS:
            raise ValueError(f"lfan attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention_form = attention
        self.visual = visual
        self.need(visual, "lfan.visual")
        self.audio = as_list(audio) or [m for m in self.inputs if m != visual]
        if not self.audio:
            raise ValueError("lfan: needs at least one audio (follower) modality")
        self.modalities = [visual, *self.audio]
        self.tcns = nn.ModuleDict()
        self.audio_encoders = nn.ModuleDict()  # optional, per follower (e.g. layer_weights)
        for m in self.audio:
            spec = per_modality(audio_encoder, m)
            if spec is not None:
                name, kw = sub_cfg(spec, "identity")
                self.audio_encoders[m] = ENCODERS.build(name, self.need(m, "lfan"), **kw)
        for m in self.modalities:
            ch = visual_channels if m == visual else audio_channels
            enc = self.audio_encoders[m] if m in self.audio_encoders else None
            d = out_dim(enc) if enc is not None else math.prod(self.need(m, "lfan"))
            self.tcns[m] = TCN(d, ch, kernel, dropout, True, tcn_init)
        self.key = nn.ModuleDict(
            {m: nn.Linear(out_dim(self.tcns[m]), att_dim) for m in self.modalities}
        )
        qv_in = {
            m: att_dim if self._qv_from_key(m) else out_dim(self.tcns[m]) for m in self.modalities
        }
        self.query = nn.ModuleDict({m: nn.Linear(qv_in[m], att_dim) for m in self.modalities})
        self.value = nn.ModuleDict({m: nn.Linear(qv_in[m], att_dim) for m in self.modalities})
        n_mod = len(self.modalities)
        self.att_dim = int(att_dim)
        self.norm = nn.LayerNorm([n_mod, att_dim])
        self.regressor = nn.Linear(out_dim(self.tcns[visual]) + n_mod * att_dim, self.task.n_out)

    def _qv_from_key(self, m: str) -> bool:
        """Released forward: a follower's query and value are computed from its key."""
        return self.attention_form == "reference" and m != self.visual

    def state_from_reference(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Our state dict from a released ``my_2d1ddy`` one (backbone and unused GroupNorms dropped).

        ``temporal``/``encoder1``/``encoderQ1``/``encoderV1`` belong to the visual leader,
        ``temporal{i}``/``encoder{i+1}``... to the i-th follower (``audio`` order).
        """
        roles = ["key", "query", "value"]
        out: dict[str, Tensor] = {}
        for i, m in enumerate(self.modalities):
            tcn = "temporal" if i == 0 else f"temporal{i}"
            out.update(tcn_state_from_reference(state, f"{tcn}.", f"tcns.{m}."))
            for role, ref in zip(roles, ("encoder", "encoderQ", "encoderV"), strict=True):
                for p in ("weight", "bias"):
                    out[f"{role}.{m}.{p}"] = state[f"{ref}{i + 1}.{p}"]
        for ours, ref in (("norm", "ln"), ("regressor", "regressor")):
            for p in ("weight", "bias"):
                out[f"{ours}.{p}"] = state[f"{ref}.{p}"]
        return out

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        self.check_batch(batch, self.modalities)
        vmask = get_mask(batch, self.visual)
        t = vmask.shape[1]
        h = {}
        for m in self.modalities:
            x, mask = batch[m], get_mask(batch, m)
            x = self.audio_encoders[m](x, mask).seq if m in self.audio_encoders else x.flatten(2)
            x, mask = fit_length(x, mask, t)
            h[m] = self.tcns[m](x, mask).seq
        keys = {m: self.key[m](h[m]) for m in self.modalities}
        src = {m: keys[m] if self._qv_from_key(m) else h[m] for m in self.modalities}
        k = torch.stack([keys[m] for m in self.modalities], dim=-2)  # [B, T, M, d]
        q = torch.stack([self.query[m](src[m]) for m in self.modalities], dim=-2)
        v = torch.stack([self.value[m](src[m]) for m in self.modalities], dim=-2)
        att = torch.softmax(k @ q.transpose(-1, -2) / math.sqrt(self.att_dim), dim=-1)
        fused = self.norm(att @ v + v).flatten(-2)
        out = self.regressor(torch.cat([h[self.visual], fused], dim=-1))  # [B, T, n_out]
        received = att.mean(-2)  # [B, T, M]
        self.attention = {m: received[..., i] for i, m in enumerate(self.modalities)}
        if self.frame_task:
            return out
        w = vmask.to(out.dtype).unsqueeze(-1)
        return (out * w).sum(1) / w.sum(1).clamp_min(1.0)
