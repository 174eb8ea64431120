"""ArcFace IR-50 (improved-residual ResNet-50, 112x112 -> 512-d), e.g. the FER+-tuned one of LFAN.

The architecture follows the widely shared face.evoLVe / InsightFace_Pytorch ``Backbone(50,
'ir')`` so their checkpoints load as state dicts. Expected key layout: ``LAYOUT``.

Input: RGB, (x - 127.5) / 127.5, the 112 ArcFace template crop. Tap: the 512-d embedding.
"""

from __future__ import annotations

import os

from torch import nn

from avemo.extract.registry import BACKBONES
from avemo.extract.video.backbones.base import StateDictBackbone
from avemo.extract.weights import WeightSpec, register_weight

WEIGHT = register_weight(
    WeightSpec(
        name="ir50",
        filename="ir50.pth",
        licence="depends on the checkpoint (MS-Celeb-1M-trained IR-50s are research-only)",
        note=(
            "Any face.evoLVe / InsightFace_Pytorch IR-50 state dict works (e.g. backbone_ir50_ms1m "
            "from face.evoLVe's model zoo, or the FER+-fine-tuned IR-50 released with the ABAW2 "
            "LFAN code). A checkpoint that pickles the whole model must be converted once: "
            "torch.save(model.state_dict(), 'ir50.pth')."
        ),
    )
)

#: The state-dict keys the loader expects, quoted in its error messages (a constant: a
#: docstring is gone under `python -OO`)
LAYOUT = (
    "``input_layer.{0,1,2}`` (conv 3x3 3->64, BN, PReLU), ``body.<i>`` for 24 units (3, 4, 14, 3 at\n"
    "widths 64, 128, 256, 512), each ``res_layer.{0..4}`` (BN, conv3x3, PReLU, conv3x3/stride, BN)\n"
    "and, when the width changes, ``shortcut_layer.{0,1}`` (1x1 conv, BN); ``output_layer.{0,3,4}``\n"
    "(BN2d, Linear 512*k*k->512, BN1d; k = 7 for 112 px). Leading ``module.`` / ``backbone.`` are\n"
    "stripped; classification heads (``head.``, ``fc.``, ``classifier.``, ``logits.``) are ignored.\n"
    "Checkpoints trained on smaller crops (LFAN's wraps the IR-50 as ``backbone.*`` with a 5x5 final\n"
    "map) load with the matching ``input_size`` option; the error message says which k the file has."
)


class BottleneckIR(nn.Module):
    """BN -> 3x3 conv -> PReLU -> 3x3 conv (stride) -> BN, plus a (projected) shortcut."""

    def __init__(self, cin: int, depth: int, stride: int) -> None:
        super().__init__()
        if cin == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


def final_map(size: int) -> int:
    """Side of the last feature map: four stride-2 3x3 convs with padding 1."""
    for _ in range(4):
        size = (size - 1) // 2 + 1
    return size


class IR50(nn.Module):
    def __init__(
        self, embedding: int = 512, units: tuple[int, ...] = (3, 4, 14, 3), input_size: int = 112
    ) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        blocks, cin = [], 64
        for n, depth in zip(units, (64, 128, 256, 512), strict=True):
            for i in range(n):
                blocks.append(BottleneckIR(cin, depth, 2 if i == 0 else 1))
                cin = depth
        self.body = nn.Sequential(*blocks)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(),
            nn.Flatten(),
            nn.Linear(512 * final_map(input_size) ** 2, embedding),
            nn.BatchNorm1d(embedding),
        )

    def forward(self, x):
        return self.output_layer(self.body(self.input_layer(x)))


@BACKBONES.register("ir50")
class IR50Backbone(StateDictBackbone):
    """ArcFace IR-50 (face.evoLVe layout), 112x112 RGB -> 512-d embedding; user weights."""

    weight = WEIGHT
    input_size = 112
    out_dim = 512
    align_margin = 0.0  # trained on the 112 ArcFace template crops
    tap = "output_layer (BN-Linear-BN 512-d embedding, before L2 normalisation)"
    layout = LAYOUT
    ignore_prefixes = ("head.", "fc.", "classifier.", "logits.")
    strip_prefixes = ("module.", "backbone.")

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        input_size: int = 112,
        batch_size: int = 64,
    ) -> None:
        self.input_size = int(input_size)
        if final_map(self.input_size) < 1 or self.input_size < 16:
            raise ValueError(f"ir50: input_size {input_size} is too small")
        super().__init__(weights=weights, device=device, batch_size=batch_size)

    def build(self) -> nn.Module:
        return IR50(input_size=self.input_size)

    def hint(self, state) -> str:
        w = next((v for k, v in state.items() if k.endswith("output_layer.3.weight")), None)
        if w is None or w.ndim != 2 or w.shape[1] % 512:
            return ""
        k = round((w.shape[1] // 512) ** 0.5)
        if k * k * 512 != w.shape[1] or k == final_map(self.input_size):
            return ""
        sizes = [s for s in range(16, 257) if final_map(s) == k]
        return (
            f"This checkpoint ends in a {k}x{k} map: it was trained on {sizes[0]}-{sizes[-1]} px crops; "
            f"build ir50 with input_size={sizes[-1]} (or the size it was trained on)."
        )
