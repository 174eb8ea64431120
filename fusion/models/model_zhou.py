"""Zhou et al. (EmotiW 2019): per-modality encoder + temporal attention + concat/FBP + head.

Roles: ``visual`` (one modality, default "face") and ``audio`` (one or more modalities,
default: every other input). Several audio streams are pooled separately and concatenated
into one audio vector a; the fusion then sees [a, v] (FBP's bilinear pair or concatenation).
``temporal`` may be any TEMPORAL name (FAN self/relation, transformer, mean, ...);
``encoder`` / ``temporal`` accept ``per_modality: {name: {...}}`` overrides, e.g. an
``audio_cnn`` encoder for a Log-Mel modality.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from avemo.fusion.models.base import (
    FusionModel,
    Head,
    as_list,
    get_mask,
    out_dim,
    per_modality,
    sub_cfg,
)
from avemo.fusion.models.branch import Branch
from avemo.fusion.registry import FUSION, MODELS
from avemo.fusion.spec import TaskSpec


@MODELS.register("zhou")
class ZhouFusion(FusionModel):
    """Intra-modal temporal attention per modality, then concatenation or FBP, then head."""

    def __init__(
        self,
        inputs: Mapping[str, tuple[int, ...]],
        task: TaskSpec,
        visual: str = "face",
        audio: str | list[str] | None = None,
        encoder: Any = None,
        temporal: Any = "fan_self",
        fusion: Any = "fbp",
        head: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(inputs, task)
        self.visual = visual
        self.need(visual, "zhou.visual")
        self.audio = as_list(audio) or [m for m in self.inputs if m != visual]
        if not self.audio:
            raise ValueError("zhou: needs at least one audio modality besides the visual one")
        self.modalities = [self.visual, *self.audio]
        self.branches = nn.ModuleDict(
            {
                m: Branch(
                    self.need(m, "zhou"),
                    per_modality(encoder, m),
                    per_modality(temporal, m),
                    pooled_only=not self.frame_task,
                )
                for m in self.modalities
            }
        )
        audio_dim = sum(out_dim(self.branches[m]) for m in self.audio)
        f_name, f_kw = sub_cfg(fusion, "fbp")
        self.fusion = FUSION.build(f_name, [audio_dim, out_dim(self.branches[visual])], **f_kw)
        self.head = Head(self.fusion.out_dim, self.task.n_out, **(head or {}))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        self.check_batch(batch, self.modalities)
        length = batch[self.visual].shape[1] if self.frame_task else None
        feats, att = {}, {}
        for m in self.modalities:
            out, _ = self.branches[m](batch[m], get_mask(batch, m), length)
            feats[m] = out.seq if self.frame_task else out.pooled
            if out.attention is not None:
                att[m] = out.attention
        self.attention = att
        a = torch.cat([feats[m] for m in self.audio], dim=-1)
        return self.head(self.fusion([a, feats[self.visual]]))
