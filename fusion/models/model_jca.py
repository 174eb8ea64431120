"""JCA: joint cross-attention (Praveen, Cardinal, Granger, T-BIOM 2023; models/cam.py shapes).

Per sequence of L rows (reference L = 16 sub-sequence features of 512-d per modality):
a = Linear(Da -> p)(X_a), v = Linear(Dv -> p)(X_v) (p = 128); J = [a, v] (L x 2p, d = 2p).
C_a = tanh(a^T W_ja J / sqrt(d)) (p x 2p; W_ja in R^{LxL}, no bias); likewise C_v.
H_a = relu(C_a W_ca^T + a^T W_a^T) (p x h; W_ca in R^{h x 2p}, W_a in R^{h x L}, h = 32).
X_att_a = (H_a W_ha^T)^T + a (W_ha in R^{L x h}); likewise v.
Head per target (``head="default"``): [X_att_a ; X_att_v] -> Linear(2p -> 128) -> Dropout(0.6)
-> Linear(128 -> 1). ``head="reference"``: the released code's head on [X_v ; X_att_v]
(raw visual + attended visual, 640-d at reference sizes); as in the released code the
attended audio output (and W_ja, W_ca, W_a, W_ha) then receives no gradient.

Because W_ja is L x L, longer timelines are cut into chunks of L rows (the last chunk padded);
invalid rows are zeroed after the input projections so they add nothing to the cross terms.
Clip tasks average the per-row outputs over valid rows; the audio stream is first mapped onto
the visual timeline when their lengths differ. ``audio_encoder`` (optional, any ENCODERS entry,
e.g. ``layer_weights`` over a ``speech_*`` set's cached layers) turns the audio rows into the
vectors ``X_a`` before the projection; without it the rows are flattened, as the reference.

With ``head="reference"`` the outputs equal the released ``CAM`` (vregressor = target 0,
aregressor = target 1) within 1e-5, and the core's X_att_a / X_att_v equal the released
module's (``tests/test_fusion_reference_numerics.py``); ``state_from_reference`` renames a
released state dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from avemo.fusion.models.base import FusionModel, fit_length, get_mask, sub_cfg, zero_invalid
from avemo.fusion.models.dropout import Dropout
from avemo.fusion.registry import ENCODERS, MODELS
from avemo.fusion.spec import TaskSpec

HEADS = ("default", "reference")
_REF_CORE = {
    "encoder1": "enc_a",
    "encoder2": "enc_v",
    "affine_a": "w_ja",
    "affine_v": "w_jv",
    "W_a": "w_a",
    "W_v": "w_v",
    "W_ca": "w_ca",
    "W_cv": "w_cv",
    "W_ha": "w_ha",
    "W_hv": "w_hv",
}


class JointCrossAttention(nn.Module):
    """The attention core: input projections + joint cross-attention with residuals."""

    def __init__(
        self,
        audio_dim: int,
        visual_dim: int,
        seq_len: int = 16,
        proj_dim: int = 128,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        self.seq_len, self.proj_dim = int(seq_len), int(proj_dim)
        self.enc_a = nn.Linear(audio_dim, proj_dim)
        self.enc_v = nn.Linear(visual_dim, proj_dim)
        self.w_ja = nn.Linear(seq_len, seq_len, bias=False)
        self.w_jv = nn.Linear(seq_len, seq_len, bias=False)
        self.w_a = nn.Linear(seq_len, hidden, bias=False)
        self.w_v = nn.Linear(seq_len, hidden, bias=False)
        self.w_ca = nn.Linear(2 * proj_dim, hidden, bias=False)
        self.w_cv = nn.Linear(2 * proj_dim, hidden, bias=False)
        self.w_ha = nn.Linear(hidden, seq_len, bias=False)
        self.w_hv = nn.Linear(hidden, seq_len, bias=False)

    def _attend(
        self,
        x: Tensor,
        joint_t: Tensor,
        w_j: nn.Linear,
        w_c: nn.Linear,
        w_x: nn.Linear,
        w_h: nn.Linear,
    ) -> Tensor:
        # x [N, L, p]; joint_t = J^T [N, 2p, L]; w_j(J^T) = J^T W_j^T = (W_j J)^T.
        corr = x.transpose(1, 2) @ w_j(joint_t).transpose(1, 2)  # a^T W_j J: [N, p, 2p]
        c = torch.tanh(corr / math.sqrt(joint_t.shape[1]))
        h = torch.relu(w_c(c) + w_x(x.transpose(1, 2)))  # [N, p, h]
        return w_h(h).transpose(1, 2) + x  # [N, L, p]

    def forward(
        self, xa: Tensor, xv: Tensor, mask: Tensor, mask_v: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``mask``: the rows both streams hold (``mask_v``, when given, the visual rows and
        ``mask`` the audio ones: a clip with one stream missing)."""
        a = zero_invalid(self.enc_a(xa), mask)
        v = zero_invalid(self.enc_v(xv), mask if mask_v is None else mask_v)
        joint_t = torch.cat([a, v], dim=-1).transpose(1, 2)
        att_a = self._attend(a, joint_t, self.w_ja, self.w_ca, self.w_a, self.w_ha)
        att_v = self._attend(v, joint_t, self.w_jv, self.w_cv, self.w_v, self.w_hv)
        return att_a, att_v


def _regressor(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), Dropout(dropout), nn.Linear(hidden, 1))


@MODELS.register("jca")
class JCA(FusionModel):
    """Joint cross-attention over L-row chunks of audio and visual features; per-target heads."""

    def __init__(
        self,
        inputs: Mapping[str, tuple[int, ...]],
        task: TaskSpec,
        audio: str = "audio",
        visual: str = "face",
        seq_len: int = 16,
        proj_dim: int = 128,
        hidden: int = 32,
        head: str = "default",
        head_hidden: int = 128,
        head_dropout: float = 0.6,
        audio_encoder: Any = None,
    ) -> None:
        super().__init__(inputs, task)
        if head not in HEADS:
            raise ValueError(f"jca head must be one of {HEADS}, got {head!r}")
        self.audio, self.visual, self.head_kind = audio, visual, head
        a_dim = math.prod(self.need(audio, "jca.audio"))
        self.audio_encoder = None  # e.g. layer_weights over cached speech-encoder layers
        if audio_encoder is not None:
            name, kw = sub_cfg(audio_encoder, "identity")
            self.audio_encoder = ENCODERS.build(name, self.inputs[audio], **kw)
            a_dim = self.audio_encoder.out_dim
        v_dim = math.prod(self.need(visual, "jca.visual"))
        self.core = JointCrossAttention(a_dim, v_dim, seq_len, proj_dim, hidden)
        in_dim = 2 * proj_dim if head == "default" else v_dim + proj_dim
        self.heads = nn.ModuleList(
            _regressor(in_dim, head_hidden, head_dropout) for _ in range(self.task.n_out)
        )

    def state_from_reference(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Our state dict from a released ``CAM`` one; its regressors map to targets in order."""
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            name, _, part = key.partition(".")
            if name in _REF_CORE:
                out[f"core.{_REF_CORE[name]}.{part}"] = value
        regressors = ("vregressor", "aregressor")[: len(self.heads)]
        for i, name in enumerate(regressors):
            for layer in ("0", "2"):
                for p in ("weight", "bias"):
                    out[f"heads.{i}.{layer}.{p}"] = state[f"{name}.{layer}.{p}"]
        return out

    def _chunks(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        n = -(-t // self.core.seq_len)
        pad = n * self.core.seq_len - t
        if pad:
            x = nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
        return x.reshape(b * n, self.core.seq_len, *x.shape[2:])

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        self.check_batch(batch, [self.audio, self.visual])
        xv, mv = batch[self.visual].flatten(2), get_mask(batch, self.visual)
        xa, ma = batch[self.audio], get_mask(batch, self.audio)
        xa = xa.flatten(2) if self.audio_encoder is None else self.audio_encoder(xa, ma).seq
        b, t = mv.shape
        xa, ma = fit_length(xa, ma, t)
        mask = mv & ma
        # a clip with no row where both streams are present (no audio, or no face at all) is
        # attended and pooled over the stream it has, not over nothing (logits of exactly 0)
        alone = ~mask.any(1, keepdim=True)
        mask_a, mask_v = torch.where(alone, ma, mask), torch.where(alone, mv, mask)
        xv, xa = zero_invalid(xv, mask_v), zero_invalid(xa, mask_a)
        att_a, att_v = self.core(
            self._chunks(xa), self._chunks(xv), self._chunks(mask_a), self._chunks(mask_v)
        )
        mask = mask_a | mask_v
        if self.head_kind == "default":
            feats = torch.cat([att_a, att_v], dim=-1)
        else:
            feats = torch.cat([self._chunks(xv), att_v], dim=-1)
        out = torch.cat([h(feats) for h in self.heads], dim=-1)  # [B*n, L, n_out]
        out = out.reshape(b, -1, out.shape[-1])[:, :t]
        self.attention = {}
        if self.frame_task:
            return out
        m = mask.to(out.dtype).unsqueeze(-1)
        return (out * m).sum(1) / m.sum(1).clamp_min(1.0)
