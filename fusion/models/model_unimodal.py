"""Unimodal baseline: one modality -> encoder -> temporal module -> head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from avemo.fusion.models.base import FusionModel, Head, get_mask, per_modality
from avemo.fusion.models.branch import Branch
from avemo.fusion.registry import MODELS
from avemo.fusion.spec import TaskSpec


@MODELS.register("unimodal")
class Unimodal(FusionModel):
    """Single-modality baseline: ENCODER + TEMPORAL + head (clip logits or per-frame outputs)."""

    def __init__(
        self,
        inputs: Mapping[str, tuple[int, ...]],
        task: TaskSpec,
        modality: str | None = None,
        encoder: Any = None,
        temporal: Any = None,
        head: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(inputs, task)
        if modality is None:
            if len(self.inputs) != 1:
                raise ValueError(
                    f"unimodal: say which modality to use (inputs: {sorted(self.inputs)})"
                )
            modality = next(iter(self.inputs))
        self.modality = modality
        self.branch = Branch(
            self.need(modality, "unimodal.modality"),
            per_modality(encoder, modality),
            per_modality(temporal, modality),
            pooled_only=not self.frame_task,
        )
        self.head = Head(self.branch.out_dim, self.task.n_out, **(head or {}))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        self.check_batch(batch, [self.modality])
        x, mask = batch[self.modality], get_mask(batch, self.modality)
        length = x.shape[1] if self.frame_task else None
        out, _ = self.branch(x, mask, length)
        self.attention = {self.modality: out.attention} if out.attention is not None else {}
        return self.head(out.seq if self.frame_task else out.pooled)
