"""``layer_weights``: a learnt softmax-weighted sum of a speech encoder's hidden layers (SUPERB).

Rows ``[L, D]`` (``speech_wavlm`` / ``speech_hubert`` / ``speech_wav2vec2`` with ``layers: all``:
the CNN embedding and every transformer layer, cached once in stage one) become ``[D]`` rows
``sum_l softmax(w)_l * x_l``, optionally after a parameter-free LayerNorm of each layer over
``D`` (``layer_norm``: SUPERB's featurizer normalises each layer before weighting, so a layer of
large norm cannot dominate by scale), then an optional ``Linear(D -> dim)`` + activation +
dropout. ``layers`` picks the stored layers that take part (indices into the row's ``L``). The
weights start equal (logits 0) unless ``init`` gives the logits; ``weights()`` reports them.

As an encoder it fits any model built on branches (``zhou``, ``unimodal``, ``late``, the
``descriptors`` model's ``deep`` streams): ``encoder: {per_modality: {audio: {name:
layer_weights, layer_norm: true, dim: 256}}}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from avemo.fusion.models.base import Encoder, EncoderOutput, zero_invalid
from avemo.fusion.models.dropout import Dropout
from avemo.fusion.models.encoder_vector import ACTIVATIONS
from avemo.fusion.registry import ENCODERS


@ENCODERS.register("layer_weights")
class LayerWeightsEncoder(Encoder):
    """Softmax-weighted sum over the layers of ``[L, D]`` rows (SUPERB), optional LayerNorm and projection."""

    index: Tensor  # a buffer: the cached layers taking part

    example_rows = (3, 16)  # the row shape it takes (registry-wide tests build it with this)

    def __init__(
        self,
        row_shape: tuple[int, ...],
        layers: Sequence[int] | None = None,
        layer_norm: bool = False,
        dim: int | None = None,
        activation: str = "none",
        dropout: float = 0.0,
        init: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        row_shape = tuple(int(d) for d in row_shape)
        if len(row_shape) != 2:
            raise ValueError(
                f"layer_weights needs rows [layers, dim] (a speech_* feature set with "
                f"layers: all), got rows {list(row_shape)}"
            )
        n_layers, width = row_shape
        idx = list(range(n_layers)) if layers is None else [int(i) for i in layers]
        if not idx or any(not 0 <= i < n_layers for i in idx):
            raise ValueError(
                f"layer_weights layers must be indices 0..{n_layers - 1}, got {layers!r}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"layer_weights activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.register_buffer("index", torch.tensor(idx), persistent=False)
        self.all_layers = idx == list(range(n_layers))
        logits = (
            torch.zeros(len(idx))
            if init is None
            else torch.as_tensor(list(init), dtype=torch.float32)
        )
        if logits.shape != (len(idx),):
            raise ValueError(
                f"layer_weights init must give {len(idx)} logits, got {list(init or [])}"
            )
        self.logits = nn.Parameter(logits.clone())
        self.layer_norm = bool(layer_norm)
        self.proj = (
            nn.Sequential(nn.Linear(width, int(dim)), ACTIVATIONS[activation](), Dropout(dropout))
            if dim
            else nn.Identity()
        )
        self.out_dim = self.cell_dim = int(dim) if dim else width

    def weights(self) -> Tensor:
        """The layer weights (softmax of the logits), one per layer taking part."""
        return torch.softmax(self.logits, 0)

    def forward(self, x: Tensor, mask: Tensor) -> EncoderOutput:
        x = zero_invalid(x if self.all_layers else x.index_select(2, self.index), mask)
        if self.layer_norm:
            x = F.layer_norm(x, x.shape[-1:])
        y = (x * self.weights()[:, None]).sum(2)  # [B, T, D]
        y = zero_invalid(self.proj(y), mask)
        return EncoderOutput(y, mask, y, mask)
