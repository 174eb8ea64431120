"""face-api's FaceExpressionNet (``@vladmandic/face-api@1.7.15``, MIT), ported to PyTorch.

The weights are the TF.js files inside the npm tarball: ``model/face_expression_model.bin`` and
its ``-weights_manifest.json`` (names, shapes, and per-tensor uint8 quantisation: value =
q * scale + min; biases float32). The layout is face-api's JS, not the weight file: four dense
blocks, each a conv (the first block: a full 3x3 conv; the others: a separable conv) with
stride 2 followed by three stride-1 separable convs, every conv fed the ReLU of the running sum
of the block's outputs so far; a 7x7 mean pool -> 256-d; a dense layer -> 7 logits.
TF ``same`` padding with stride 2 pads only the bottom/right on even sizes: handled here.
The port is held to face-api itself run in node (tests/test_backbones_faceapi.py, reference
made by tests/fixtures/make_faceapi_reference.py).

Features: the 256-d pooled vector the classifier reads, optionally followed by the 7 logits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avemo.extract.registry import BACKBONES
from avemo.extract.video.align import CropSpec
from avemo.extract.video.backbones.base import ExpressionBackbone, file_sha256, put_param
from avemo.extract.weights import WeightSpec, register_weight, resolve


class _Npm(TypedDict):
    """The WeightSpec fields both face-api files share (where they come from)."""

    package: str
    version: str
    source: str
    licence: str


_NPM: _Npm = {
    "package": "@vladmandic/face-api",
    "version": "1.7.15",
    "source": "npm",
    "licence": "MIT",
}
WEIGHT = register_weight(
    WeightSpec(
        name="faceapi_expression",
        filename="face_expression_model.bin",
        sha256="9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d",
        member="model/face_expression_model.bin",
        note="face-api FaceExpressionNet weights (TF.js, uint8-quantised), npm @vladmandic/face-api.",
        **_NPM,
    )
)
MANIFEST = register_weight(
    WeightSpec(
        name="faceapi_expression_manifest",
        filename="face_expression_model-weights_manifest.json",
        sha256="5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
        member="model/face_expression_model-weights_manifest.json",
        note="TF.js manifest of face_expression_model.bin (tensor names, shapes, quantisation).",
        **_NPM,
    )
)

CLASSES = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
MEAN_RGB = (122.782, 117.001, 104.298)  # face-api subtracts these, then divides by 255


class FaceApiPortError(ValueError):
    """The weight files are not the FaceExpressionNet this port implements."""


def _pad_same(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """Zero padding of TF's ``same`` (the odd pixel after) for a ``k`` x ``k`` window, stride ``s``."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad wants (left, right, top, bottom)
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class SeparableConv(nn.Module):
    """TF separableConv2d (3x3 depthwise, stride ``s``, ``same``) -> 1x1 pointwise -> + bias."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(_pad_same(x, 3, self.stride)))


class FirstConv(nn.Module):
    """The first block's full 3x3 conv, stride 2, ``same``, with bias."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_pad_same(x, 3, 2))


class DenseBlock(nn.Module):
    """conv0 (stride 2) then conv1..3, each reading ReLU(sum of the block's outputs so far)."""

    def __init__(self, cin: int, cout: int, first: bool = False) -> None:
        super().__init__()
        self.conv0 = FirstConv(cin, cout) if first else SeparableConv(cin, cout, 2)
        self.convs = nn.ModuleList(SeparableConv(cout, cout) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        running = F.relu(self.conv0(x))  # conv0's own output is rectified, then summed as is
        for conv in self.convs:
            running = running + conv(F.relu(running))
        return F.relu(running)


class FaceExpressionNet(nn.Module):
    """112x112 RGB, normalised -> (pooled 256-d features, 7 logits)."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), num_classes: int = 7) -> None:
        super().__init__()
        cins = (3, *widths[:-1])
        self.blocks = nn.Sequential(
            *[DenseBlock(a, b, i == 0) for i, (a, b) in enumerate(zip(cins, widths, strict=True))]
        )
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.blocks(x).mean((2, 3))  # face-api: avgPool 7x7 'valid' on the 7x7 map
        return feats, self.fc(feats)


def read_tfjs_weights(
    manifest: str | os.PathLike[str], weights: str | os.PathLike[str]
) -> dict[str, np.ndarray]:
    """name -> float32 array (TF.js layout) from a TF.js manifest and its one binary shard."""
    groups = json.loads(Path(manifest).read_text())
    if len(groups) != 1 or len(groups[0].get("weights", [])) == 0:
        raise FaceApiPortError(f"{manifest}: expected one weight group, got {len(groups)}")
    buf = Path(weights).read_bytes()
    out: dict[str, np.ndarray] = {}
    pos = 0
    for spec in groups[0]["weights"]:
        n = int(np.prod(spec["shape"], dtype=np.int64))
        q = spec.get("quantization")
        if q is not None:
            if q.get("dtype") != "uint8":
                raise FaceApiPortError(
                    f"{spec['name']}: quantisation {q.get('dtype')} not supported"
                )
            raw = np.frombuffer(buf, np.uint8, n, pos)
            value = (raw.astype(np.float64) * q["scale"] + q["min"]).astype(np.float32)
            pos += n
        elif spec["dtype"] == "float32":
            value = np.frombuffer(buf, "<f4", n, pos).copy()
            pos += 4 * n
        else:
            raise FaceApiPortError(f"{spec['name']}: dtype {spec['dtype']} not supported")
        out[spec["name"]] = value.reshape(spec["shape"])
    if pos != len(buf):
        raise FaceApiPortError(f"{weights}: manifest covers {pos} of {len(buf)} bytes")
    return out


def _put(param: torch.Tensor, value: np.ndarray, where: str) -> None:
    put_param(param, value, where, FaceApiPortError, "file")


@torch.no_grad()
def load_faceapi(
    manifest: str | os.PathLike[str], weights: str | os.PathLike[str]
) -> FaceExpressionNet:
    """The port filled from face-api's files; every tensor must be used exactly once."""
    w = read_tfjs_weights(manifest, weights)
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in w:
            raise FaceApiPortError(f"{manifest}: tensor {name} missing")
        used.add(name)
        return w[name]

    widths = tuple(int(take(f"dense{i}/conv0/bias").shape[0]) for i in range(4))
    net = FaceExpressionNet(widths, int(take("fc/bias").shape[0]))
    blocks = [blk for blk in net.blocks if isinstance(blk, DenseBlock)]  # all of them
    for i, blk in enumerate(blocks):
        for j, conv in enumerate([blk.conv0, *blk.convs]):
            key = f"dense{i}/conv{j}"
            if isinstance(conv, FirstConv):
                _put(
                    conv.conv.weight, take(f"{key}/filters").transpose(3, 2, 0, 1), key
                )  # HWIO -> OIHW
                _put(conv.conv.get_parameter("bias"), take(f"{key}/bias"), key)
            elif isinstance(conv, SeparableConv):
                _put(
                    conv.depthwise.weight,
                    take(f"{key}/depthwise_filter").transpose(2, 3, 0, 1),
                    key,
                )
                _put(
                    conv.pointwise.weight,
                    take(f"{key}/pointwise_filter").transpose(3, 2, 0, 1),
                    key,
                )
                _put(conv.pointwise.get_parameter("bias"), take(f"{key}/bias"), key)
    _put(net.fc.weight, take("fc/weights").T, "fc")
    _put(net.fc.bias, take("fc/bias"), "fc")
    if set(w) - used:
        raise FaceApiPortError(
            f"{manifest}: tensors the port does not use: {sorted(set(w) - used)}"
        )
    return net.eval()


@BACKBONES.register("faceapi_expression")
class FaceApiExpression(ExpressionBackbone):
    """face-api FaceExpressionNet, 7 emotions, 112x112 RGB; 256-d pooled features (+7 logits)."""

    face_set = "faceapi"  # its feature set is face_faceapi (the name existing files carry)

    input_size = 112
    classes = CLASSES
    # Measured across sources, not reasoned (``avemo.bench.crops``; README "Face crops"): a square
    # of the detector box's side, 20 % tighter, bilinear: zero-shot 32/48 clips pooled over RAVDESS
    # a05, CREMA-D 1001 and 14 web clips, vs 25/48 for face-api's own convention (the box padded
    # to a square: the same as margin 0 on BlazeFace's square boxes).
    crop = CropSpec("box", -0.2, square=True, interpolation="linear")
    mean = MEAN_RGB
    std = (255.0, 255.0, 255.0)

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        with_logits: bool = False,
        batch_size: int = 256,
        manifest: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self.weights_path = Path(resolve(WEIGHT.name, weights))
        self.manifest_path = Path(resolve(MANIFEST.name, manifest))
        net = load_faceapi(self.manifest_path, self.weights_path)
        self._finish_head(
            net,
            net.fc.in_features,
            net.fc.out_features,
            with_logits,
            "dense3 output, 7x7 mean pooled (the classifier's input)",
        )

    def weights_info(self) -> dict[str, str]:
        return {
            WEIGHT.name: file_sha256(self.weights_path),
            MANIFEST.name: file_sha256(self.manifest_path),
        }
