"""VGGFace2 ResNet-50 (Cao et al. 2018; 224x224 -> 2048-d), the Caffe-converted network.

The Caffe ResNet differs from torchvision's in two places, both reproduced here: the stride-2
of each stage sits in the first 1x1 conv of its first bottleneck (not the 3x3), and the stem
max-pool has no padding and rounds up (``ceil_mode``). Expected key layout: ``LAYOUT``. The
common PyTorch conversion (``resnet50_ft_weight.pkl`` / ``resnet50_scratch_weight.pkl``) is a
pickle of numpy arrays with these names; convert it once, where you trust the file:
``torch.save({k: torch.from_numpy(v) for k, v in pickle.load(open(p, 'rb'), encoding='latin1')
.items()}, 'vggface2_resnet50.pth')``.

Input: BGR, mean (91.4953, 103.8827, 131.0912) subtracted, no scaling. Tap: avgpool, 2048-d.
"""

from __future__ import annotations

import torchvision
from torch import nn

from avemo.extract.registry import BACKBONES
from avemo.extract.video.backbones.base import StateDictBackbone
from avemo.extract.weights import WeightSpec, register_weight

WEIGHT = register_weight(
    WeightSpec(
        name="vggface2_resnet50",
        filename="vggface2_resnet50.pth",
        licence="VGGFace2 models: research use (see the VGGFace2 licence)",
        note=(
            "Get the VGGFace2 ResNet-50 PyTorch weights (resnet50_ft or resnet50_scratch, as converted "
            "in the VGGFace2-pytorch project) and convert the pickle to a state dict as described in "
            "avemo/extract/video/backbones/vggface2_resnet50.py."
        ),
    )
)

#: The state-dict keys the loader expects, quoted in its error messages (a constant: a
#: docstring is gone under `python -OO`)
LAYOUT = (
    "torchvision's\n"
    "``resnet50`` names (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4.2.bn3``, downsample\n"
    "``layerN.0.downsample.{0,1}``); ``fc.*`` (8631 identities) may be present and is ignored."
)


def caffe_resnet50() -> nn.Module:
    """torchvision ResNet-50 rewired to the Caffe layout; ``fc`` removed (avgpool features)."""
    net = torchvision.models.resnet50()
    net.maxpool = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
    for stage in (net.layer2, net.layer3, net.layer4):
        first = stage[0]
        first.conv1.stride, first.conv2.stride = (2, 2), (1, 1)
    net.fc = nn.Identity()
    return net


@BACKBONES.register("vggface2_resnet50")
class VGGFace2ResNet50(StateDictBackbone):
    """VGGFace2 ResNet-50 (Caffe layout), 224x224 BGR -> 2048-d avgpool features; user weights."""

    face_set = "vggface2"  # its feature set is face_vggface2 (the name existing files carry)

    weight = WEIGHT
    input_size = 224
    out_dim = 2048
    # VGGFace2 crops: the detector box enlarged by 30 %, resized to 256, centre 224: loose.
    align_margin = 0.3
    bgr = True
    mean = (91.4953, 103.8827, 131.0912)  # B, G, R
    std = (1.0, 1.0, 1.0)
    tap = "avgpool (global average of layer4), 2048-d"
    layout = LAYOUT
    ignore_prefixes = ("fc.",)

    def build(self) -> nn.Module:
        return caffe_resnet50()
