"""Late fusion: one encoder + temporal + head per modality; class scores are averaged.

``combine="mean"`` averages; ``combine="learned"`` uses softmax-normalised learned modality
weights. ``on="logits"`` averages raw scores (also right for regression); ``on="probs"``
averages softmax probabilities and returns their log (so cross-entropy still applies).
A modality with no valid row in a sample (missing) is left out of that sample's average.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from avemo.fusion.models.base import FusionModel, Head, as_list, get_mask, out_dim, per_modality
from avemo.fusion.models.branch import Branch
from avemo.fusion.registry import MODELS
from avemo.fusion.spec import TaskSpec

COMBINE = ("mean", "learned")
ON = ("logits", "probs")


@MODELS.register("late")
class LateFusion(FusionModel):
    """Per-modality heads; (learned-)weighted average of their scores over present modalities."""

    def __init__(
        self,
        inputs: Mapping[str, tuple[int, ...]],
        task: TaskSpec,
        modalities: str | list[str] | None = None,
        encoder: Any = None,
        temporal: Any = None,
        head: Mapping[str, Any] | None = None,
        combine: str = "mean",
        on: str = "logits",
    ) -> None:
        super().__init__(inputs, task)
        if combine not in COMBINE or on not in ON:
            raise ValueError(f"late: combine in {COMBINE}, on in {ON}; got {combine!r}, {on!r}")
        if on == "probs" and self.frame_task:
            raise ValueError("late: on='probs' is for classification (clip tasks)")
        self.modalities = as_list(modalities) or list(self.inputs)
        self.branches = nn.ModuleDict(
            {
                m: Branch(
                    self.need(m, "late"),
                    per_modality(encoder, m),
                    per_modality(temporal, m),
                    pooled_only=not self.frame_task,
                )
                for m in self.modalities
            }
        )
        self.heads = nn.ModuleDict(
            {
                m: Head(out_dim(self.branches[m]), self.task.n_out, **(head or {}))
                for m in self.modalities
            }
        )
        self.combine, self.on = combine, on
        self.logit_w = (
            nn.Parameter(torch.zeros(len(self.modalities))) if combine == "learned" else None
        )

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        self.check_batch(batch, self.modalities)
        length = batch[self.modalities[0]].shape[1] if self.frame_task else None
        scores, present, att = [], [], {}
        for m in self.modalities:
            out, mask = self.branches[m](batch[m], get_mask(batch, m), length)
            s = self.heads[m](out.seq if self.frame_task else out.pooled)
            scores.append(torch.softmax(s, -1) if self.on == "probs" else s)
            present.append(mask if self.frame_task else mask.any(1))
            if out.attention is not None:
                att[m] = out.attention
        self.attention = att
        s = torch.stack(scores, 0)  # [M, B, (T,) n]
        w = torch.stack(present, 0).to(s.dtype)  # [M, B, (T)]
        if self.logit_w is not None:
            w = w * torch.softmax(self.logit_w, 0).view(-1, *([1] * (w.dim() - 1)))
        w = w / w.sum(0, keepdim=True).clamp_min(1e-12)
        fused = (w.unsqueeze(-1) * s).sum(0)
        return torch.log(fused.clamp_min(1e-12)) if self.on == "probs" else fused
