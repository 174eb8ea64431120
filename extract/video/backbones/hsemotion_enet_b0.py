"""HSEmotion / EmotiEffNet EfficientNet-B0 (AffectNet, 224x224 -> 1280-d), timm key layout.

HSEmotion's models are timm ``tf_efficientnet_b0_ns`` networks pickled as whole modules (they
break with new timm). This is the same network written out here, so a plain state dict loads:
TF "SAME" padding (asymmetric on stride 2), BatchNorm eps 1e-3, SiLU, squeeze-excitation at
1/4 of each block's input width. Expected key layout: ``LAYOUT`` (timm ``efficientnet``). Convert a
HSEmotion .pt once where timm is installed and the file trusted: unpickle it with torch
(``weights_only=False``), then ``torch.save`` its ``.state_dict()`` as ``hsemotion_enet_b0.pth``.

Input: RGB, ImageNet mean/std. Tap: global average pool after ``conv_head``/``bn2``, 1280-d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avemo.extract.registry import BACKBONES
from avemo.extract.video.backbones.base import StateDictBackbone
from avemo.extract.video.backbones.torchvision_models import IMAGENET_MEAN, IMAGENET_STD
from avemo.extract.weights import WeightSpec, register_weight

WEIGHT = register_weight(
    WeightSpec(
        name="hsemotion_enet_b0",
        filename="hsemotion_enet_b0.pth",
        licence="Apache-2.0 (HSEmotion / face-emotion-recognition models)",
        note=(
            "Take enet_b0_8_best_afew.pt (or enet_b0_8_best_vgaf.pt, enet_b0_7.pt) from the "
            "HSE-asavchenko/face-emotion-recognition repository (models/affectnet_emotions) and "
            "convert it to a state dict as described in "
            "avemo/extract/video/backbones/hsemotion_enet_b0.py."
        ),
    )
)

#: The state-dict keys the loader expects, quoted in its error messages (a constant: a
#: docstring is gone under `python -OO`)
LAYOUT = (
    "``conv_stem``,\n"
    "``bn1``, ``blocks.0.0.{conv_dw,bn1,se.conv_reduce,se.conv_expand,conv_pw,bn2}``,\n"
    "``blocks.<s>.<i>.{conv_pw,bn1,conv_dw,bn2,se.conv_reduce,se.conv_expand,conv_pwl,bn3}`` for\n"
    "stages 1-6, ``conv_head``, ``bn2``; ``classifier.*`` (the 7/8 emotions) is ignored."
)

BN_EPS = 1e-3
# (repeats, kernel, stride, expansion, out channels) per stage: EfficientNet-B0
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: extra pixel at the bottom/right when odd."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(
            x.shape[-1:-3:-1],
            self.kernel_size[::-1],
            self.stride[::-1],
            self.dilation[::-1],
            strict=True,
        ):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1) -> SameConv:
    return SameConv(cin, cout, k, s, groups=groups, bias=False)


class SqueezeExcite(nn.Module):
    def __init__(self, ch: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(ch, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class DepthwiseSeparable(nn.Module):
    """Stage 0: depthwise k x k -> SE -> pointwise (no expansion)."""

    def __init__(self, cin: int, cout: int, k: int, s: int) -> None:
        super().__init__()
        self.conv_dw, self.bn1 = _conv(cin, cin, k, s, groups=cin), nn.BatchNorm2d(cin, eps=BN_EPS)
        self.se = SqueezeExcite(cin, max(1, cin // 4))
        self.conv_pw, self.bn2 = _conv(cin, cout), nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.se(F.silu(self.bn1(self.conv_dw(x))))))
        return y + x if self.skip else y


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand -> depthwise k x k -> SE -> 1x1 project (+ identity when shapes match)."""

    def __init__(self, cin: int, cout: int, k: int, s: int, e: int) -> None:
        super().__init__()
        mid = cin * e
        self.conv_pw, self.bn1 = _conv(cin, mid), nn.BatchNorm2d(mid, eps=BN_EPS)
        self.conv_dw, self.bn2 = _conv(mid, mid, k, s, groups=mid), nn.BatchNorm2d(mid, eps=BN_EPS)
        self.se = SqueezeExcite(mid, max(1, cin // 4))
        self.conv_pwl, self.bn3 = _conv(mid, cout), nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.bn1(self.conv_pw(x)))
        y = self.se(F.silu(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.skip else y


class EfficientNetB0(nn.Module):
    """tf_efficientnet_b0 trunk (timm names), pooled 1280-d output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem, self.bn1 = _conv(3, 32, 3, 2), nn.BatchNorm2d(32, eps=BN_EPS)
        stages, cin = [], 32
        for i, (n, k, s, e, cout) in enumerate(STAGES):
            blocks = []
            for j in range(n):
                stride = s if j == 0 else 1
                blk = (
                    DepthwiseSeparable(cin, cout, k, stride)
                    if i == 0
                    else InvertedResidual(cin, cout, k, stride, e)
                )
                blocks.append(blk)
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head, self.bn2 = _conv(cin, 1280), nn.BatchNorm2d(1280, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.bn1(self.conv_stem(x)))
        x = F.silu(self.bn2(self.conv_head(self.blocks(x))))
        return x.mean((2, 3))


@BACKBONES.register("hsemotion_enet_b0")
class HSEmotionENetB0(StateDictBackbone):
    """HSEmotion EfficientNet-B0 (AffectNet), 224x224 RGB -> 1280-d pooled features; user weights."""

    face_set = "hsemotion"  # its feature set is face_hsemotion (the name existing files carry)

    weight = WEIGHT
    input_size = 224
    out_dim = 1280
    # HSEmotion crops are the detector's face box with little context.
    align_margin = 0.1
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    tap = "global average pool after conv_head/bn2 (classifier input), 1280-d"
    layout = LAYOUT
    ignore_prefixes = ("classifier.",)

    def build(self) -> nn.Module:
        return EfficientNetB0()
