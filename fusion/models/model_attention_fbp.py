"""Zhang, Wang, Du (EmotiW 2018) "Deep Fusion": attention-guided factorized bilinear pooling.

Audio: spectrogram rows -> fully-convolutional CNN (``audio_cnn`` encoder); every
time-frequency cell a_i of its last map is attended. Video: per-frame face vectors v_j.
Attention per modality (form UNVERIFIED, the spec's default): e_i = u^T tanh(W a_i + b),
alpha = softmax(lambda * e) over valid items, pooled = sum_i alpha_i a_i. Then FBP -> head.
``att_dim`` and ``lam`` (lambda, default 1.0) are options. Clip tasks only (one label per clip).
If the audio modality is already a vector sequence (cached CNN rows), use a vector encoder:
its rows become the attended cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from avemo.fusion.models.base import (
    FusionModel,
    Head,
    get_mask,
    masked_softmax,
    sub_cfg,
    zero_invalid,
)
from avemo.fusion.registry import ENCODERS, FUSION, MODELS
from avemo.fusion.spec import TaskSpec


class AdditiveAttentionPool(nn.Module):
    """e_i = u^T tanh(W x_i + b); alpha = masked softmax(lam * e); pooled = sum alpha_i x_i."""

    def __init__(self, dim: int, att_dim: int = 128, lam: float = 1.0) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, att_dim)
        self.u = nn.Linear(att_dim, 1, bias=False)
        self.lam = float(lam)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        e = self.u(torch.tanh(self.proj(x))).squeeze(-1)
        alpha = masked_softmax(self.lam * e, mask)
        x = zero_invalid(x, mask)
        return (alpha.unsqueeze(-1) * x).sum(1), alpha


@MODELS.register("attention_fbp")
class AttentionFBP(FusionModel):
    """Attention over audio t-f cells and over face frames, then FBP and a head (clip task)."""

    def __init__(
        self,
        inputs: Mapping[str, tuple[int, ...]],
        task: TaskSpec,
        visual: str = "face",
        audio: str | None = None,
        audio_encoder: Any = "audio_cnn",
        visual_encoder: Any = "identity",
        att_dim: int = 128,
        lam: float = 1.0,
        fusion: Any = "fbp",
        head: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(inputs, task)
        if self.frame_task:
            raise ValueError("attention_fbp pools whole clips; use it for clip tasks")
        others = [m for m in self.inputs if m != visual]
        if audio is None:
            if len(others) != 1:
                raise ValueError(
                    f"attention_fbp: say which modality is audio (inputs {sorted(self.inputs)})"
                )
            audio = others[0]
        self.visual, self.audio = visual, audio
        a_name, a_kw = sub_cfg(audio_encoder, "audio_cnn")
        v_name, v_kw = sub_cfg(visual_encoder, "identity")
        self.audio_encoder = ENCODERS.build(a_name, self.need(audio, "attention_fbp.audio"), **a_kw)
        self.visual_encoder = ENCODERS.build(
            v_name, self.need(visual, "attention_fbp.visual"), **v_kw
        )
        self.audio_att = AdditiveAttentionPool(self.audio_encoder.cell_dim, att_dim, lam)
        self.visual_att = AdditiveAttentionPool(self.visual_encoder.out_dim, att_dim, lam)
        f_name, f_kw = sub_cfg(fusion, "fbp")
        self.fusion = FUSION.build(
            f_name, [self.audio_encoder.cell_dim, self.visual_encoder.out_dim], **f_kw
        )
        self.head = Head(self.fusion.out_dim, self.task.n_out, **(head or {}))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        self.check_batch(batch, [self.audio, self.visual])
        aud = self.audio_encoder(batch[self.audio], get_mask(batch, self.audio))
        vis = self.visual_encoder(batch[self.visual], get_mask(batch, self.visual))
        a, alpha_a = self.audio_att(aud.cells, aud.cells_mask)
        v, alpha_v = self.visual_att(vis.seq, vis.mask)
        b, t = aud.mask.shape
        per_time = alpha_a.view(b, t, -1).sum(-1) if t else alpha_a  # cells are time-major
        self.attention = {self.audio: per_time, self.visual: alpha_v}
        return self.head(self.fusion([a, v]))
