"""Any torchvision classification model as a face backbone (ImageNet features, a baseline).

Registered as ``torchvision`` (option ``model``), ``torchvision:<name>`` for every torchvision
classification model, and ``resnet50_imagenet``. Weights: a local state dict of the whole
classifier (``torchvision.models.get_model(name, weights="DEFAULT").state_dict()``), found by
path, ``AVEMO_WEIGHTS_TORCHVISION_<NAME>``, the avemo cache or torch hub's cache; downloaded
from torchvision's URL only when ``AVEMO_ALLOW_DOWNLOAD=1``.

Tap: the input of the model's last Linear layer (the penultimate, pooled representation:
2048-d for ResNet-50), found generically so every family works the same way.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torchvision.models as tvm
from torch import nn

from avemo import settings
from avemo.extract.registry import BACKBONES
from avemo.extract.video.backbones.base import (
    TorchBackbone,
    file_sha256,
    load_into,
    load_state_dict_file,
)
from avemo.extract.weights import WEIGHTS, WeightSpec, register_weight, resolve

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_AUX = ("aux1.", "aux2.", "AuxLogits.")  # googlenet / inception auxiliary heads: unused


def classification_models() -> list[str]:
    return tvm.list_models(module=tvm)


def weight_spec(model: str, tag: str = "DEFAULT") -> tuple[WeightSpec, Any]:
    """The weights registry entry for torchvision ``model`` (registered once), and its enum
    member (a ``torchvision.models.WeightsEnum``; torchvision ships no type information)."""
    enum = tvm.get_model_weights(model)[tag]
    spec = WeightSpec(
        name=f"torchvision_{model}",
        filename=Path(enum.url).name,
        url=enum.url,
        licence="torchvision ImageNet weights (BSD-3 code; see torchvision docs for the data terms)",
        note=(
            f"Save it on a machine online with torch.save(torchvision.models.get_model({model!r}, "
            f"weights={tag!r}).state_dict(), 'file.pth') and pass weights='file.pth'."
        ),
    )
    if spec.name not in WEIGHTS:
        register_weight(spec)
    return WEIGHTS.get(spec.name), enum


def replace_last_linear(net: nn.Module) -> tuple[str, int]:
    """Swap the model's last ``nn.Linear`` for Identity; returns its name and input width.

    SqueezeNet classifies with a conv: its whole ``classifier`` becomes global average pooling.
    """
    linears = [
        (n, m)
        for n, m in net.named_modules()
        if isinstance(m, nn.Linear) and not n.startswith(_AUX)
    ]
    if not linears:
        head = getattr(net, "classifier", None)
        convs = (
            [m for m in head.modules() if isinstance(m, nn.Conv2d)]
            if isinstance(head, nn.Module)
            else []
        )
        if not convs:
            raise ValueError(f"{type(net).__name__} has no Linear or conv classifier to tap before")
        net.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return "classifier", convs[0].in_channels
    name, lin = linears[-1]
    parent, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr, nn.Identity())
    return name, lin.in_features


class TorchvisionBackbone(TorchBackbone):
    """torchvision classification model by name (option ``model``); penultimate features."""

    face_set: ClassVar[str | None] = None  # no face_* set of its own: it needs the option ``model``

    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    # ImageNet models never saw aligned faces; a little context keeps the whole head in view.
    align_margin = 0.2

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        model: str = "resnet50",
        weights_tag: str = "DEFAULT",
        batch_size: int = 64,
    ) -> None:
        super().__init__(device=device, batch_size=batch_size)
        if model not in classification_models():
            raise ValueError(
                f"unknown torchvision classification model {model!r}; known: {', '.join(classification_models())}"
            )
        self.model = model
        if type(self) is TorchvisionBackbone:
            self.name = f"torchvision:{model}"
        self.spec, enum = weight_spec(model, weights_tag)
        self.input_size = int(enum.transforms.keywords.get("crop_size", 224))
        self.weights_path = self._find(weights)  # before building: a missing file fails fast
        extra = {"image_size": self.input_size} if model.startswith("vit_") else {}
        net = tvm.get_model(model, weights=None, **extra)
        if hasattr(net, "transform_input"):
            net.transform_input = True  # what torchvision's builders set when ImageNet weights load
        state = load_state_dict_file(self.weights_path, f"torchvision:{model}")
        for aux in ("aux1", "aux2", "AuxLogits"):
            if getattr(net, aux, None) is not None:
                setattr(net, aux, None)
        if hasattr(net, "aux_logits"):
            net.aux_logits = False
        load_into(
            net,
            state,
            f"torchvision:{model}",
            self.weights_path,
            ignore_prefixes=_AUX,
            layout=f"torchvision.models.get_model({model!r}).state_dict() keys",
        )
        head, self.out_dim = replace_last_linear(net)
        self.tap = f"input of {head} (last classifier layer): penultimate pooled features"
        self._finish(net)

    def _find(self, weights: str | os.PathLike[str] | None) -> Path:
        if weights is None and settings.current().weights_override(self.spec.env_var) is None:
            hub = Path(torch.hub.get_dir()) / "checkpoints" / self.spec.filename
            if hub.exists():  # torchvision downloaded it before
                return hub
        return Path(resolve(self.spec.name, weights))

    def weights_info(self) -> dict[str, str]:
        return {self.spec.name: file_sha256(self.weights_path)}


BACKBONES.register("torchvision")(TorchvisionBackbone)


@BACKBONES.register("resnet50_imagenet")
class ResNet50ImageNet(TorchvisionBackbone):
    """torchvision ResNet-50, ImageNet (IMAGENET1K_V2): 224 RGB -> 2048-d avgpool features."""

    face_set = "resnet50"  # its feature set is face_resnet50 (the name existing files carry)

    def __init__(
        self, weights: str | os.PathLike[str] | None = None, device: str = "cpu", **options
    ) -> None:
        super().__init__(weights=weights, device=device, model="resnet50", **options)


for _m in classification_models():
    BACKBONES.register(
        f"torchvision:{_m}", help=f"torchvision {_m} (ImageNet), penultimate features"
    )(functools.partial(TorchvisionBackbone, model=_m))
