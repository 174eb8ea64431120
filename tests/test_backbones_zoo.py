"""Backbones whose pretrained weights are not obtainable here (ArcFace ONNX, torchvision ImageNet,
VGGFace2 / IR-50 / HSEmotion): the code paths run with generated weights of the right shapes
(a tiny ONNX exported from torch, randomly initialised state dicts saved to disk), on real
aligned faces (astronaut), checked against the same network run directly in torch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from torch import nn

from avemo.extract.registry import BACKBONES
from avemo.extract.video import backbones as _backbones  # noqa: F401 - registers
from avemo.extract.video.backbones.base import arcface_template
from avemo.extract.weights import MissingWeightsError

FIXTURES = Path(__file__).parent / "fixtures"


def face_crops(size: int, margin: float = 0.0) -> torch.Tensor:
    """uint8 [2, size, size, 3]: the astronaut's face aligned to the template, and mirrored."""
    doc = json.loads((FIXTURES / "fer_reference.json").read_text())
    lm = np.array(
        next(e["landmarks"] for e in doc["entries"] if e["image"] == "astronaut"), np.float32
    )
    m, _ = cv2.estimateAffinePartial2D(lm, arcface_template(size, margin))
    crop = cv2.warpAffine(skimage.data.astronaut(), m, (size, size), flags=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(np.stack([crop, crop[:, ::-1]])))


def normalise(crops: torch.Tensor, mean, std, bgr: bool = False) -> torch.Tensor:
    x = crops.permute(0, 3, 1, 2).float()
    if bgr:
        x = x.flip(1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """An empty avemo cache, torch hub and insightface home, offline."""
    for var in ("AVEMO_CACHE", "TORCH_HOME", "INSIGHTFACE_HOME", "HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("AVEMO_OFFLINE", "1")
    monkeypatch.delenv("AVEMO_ALLOW_DOWNLOAD", raising=False)
    return tmp_path


# ---------------------------------------------------------------- arcface_r50 (ONNX)


class TinyArcFace(nn.Module):
    """Same signature as w600k_r50.onnx: [N, 3, 112, 112] -> [N, 512]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.PReLU(8),
            nn.Conv2d(8, 16, 3, 2, 1),
            nn.AdaptiveAvgPool2d(4),
        )
        self.fc = nn.Linear(16 * 16, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


def export_onnx(path: Path, dynamic: bool = True) -> nn.Module:
    torch.manual_seed(0)
    net = TinyArcFace().eval()
    torch.onnx.export(
        net,
        torch.zeros(1, 3, 112, 112),
        str(path),
        input_names=["input.1"],
        output_names=["fc1"],
        dynamic_axes={"input.1": {0: "None"}, "fc1": {0: "None"}} if dynamic else None,
        dynamo=False,
    )
    return net


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_arcface_onnx_matches_torch_and_finds_model_pack(tmp_path, monkeypatch) -> None:
    pack = tmp_path / "home" / ".insightface" / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    net = export_onnx(pack / "w600k_r50.onnx")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("INSIGHTFACE_HOME", raising=False)
    monkeypatch.delenv("AVEMO_WEIGHTS_ARCFACE_W600K_R50", raising=False)
    bb = BACKBONES.build("arcface_r50", batch_size=1)  # found in insightface's usual place
    assert (bb.input_size, bb.out_dim, bb.grayscale, bb.align_margin) == (112, 512, False, 0.0)
    assert (
        bb.weights_path == pack / "w600k_r50.onnx"
        and len(bb.weights_info()["arcface_w600k_r50"]) == 64
    )
    crops = face_crops(112)
    got = bb.embed(crops)
    with torch.no_grad():
        want = net(normalise(crops, (127.5,) * 3, (127.5,) * 3))
    assert got.dtype == torch.float32 and got.shape == (2, 512)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (
        BACKBONES.build("arcface_r50", weights=pack).weights_path == pack / "w600k_r50.onnx"
    )  # folder
    assert bb.embed(crops[:0]).shape == (0, 512)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_arcface_static_batch_and_loud_cpu_fallback(tmp_path) -> None:
    path = tmp_path / "static.onnx"
    net = export_onnx(path, dynamic=False)
    crops = face_crops(112)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bb = BACKBONES.build("arcface_r50", weights=path, device="cuda")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert any("RUNS ON CPU" in str(w.message) for w in caught)
        assert bb.providers == ["CPUExecutionProvider"]
    with torch.no_grad():
        want = net(normalise(torch.cat([crops, crops[:1]]), (127.5,) * 3, (127.5,) * 3))
    torch.testing.assert_close(bb.embed(torch.cat([crops, crops[:1]])), want, atol=1e-4, rtol=1e-4)


def test_arcface_missing_model_pack_message(no_weights_anywhere) -> None:
    with pytest.raises(MissingWeightsError) as e:
        BACKBONES.build("arcface_r50")
    msg = str(e.value)
    assert "w600k_r50.onnx" in msg and "buffalo_l" in msg and ".insightface/models" in msg
    with pytest.raises(MissingWeightsError, match="does not exist"):
        BACKBONES.build("arcface_r50", weights=no_weights_anywhere / "nowhere")


# ---------------------------------------------------------------- torchvision


def test_torchvision_by_name_matches_direct_forward(tmp_path) -> None:
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18().eval()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    bb = BACKBONES.build("torchvision:resnet18", weights=tmp_path / "r18.pth", batch_size=1)
    assert (bb.name, bb.input_size, bb.out_dim) == ("torchvision:resnet18", 224, 512)
    assert bb.tap.startswith("input of fc")
    crops = face_crops(224, bb.align_margin)
    ref.fc = nn.Identity()
    with torch.no_grad():
        want = ref(normalise(crops, bb.mean, bb.std))
    torch.testing.assert_close(bb.embed(crops), want, atol=1e-4, rtol=1e-4)
    same = BACKBONES.build("torchvision", model="resnet18", weights=tmp_path / "r18.pth")
    assert same.weights_info() == bb.weights_info()


def test_torchvision_sequential_head_and_resnet50(tmp_path) -> None:
    import torchvision

    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "mnv3.pth")
    bb = BACKBONES.build("torchvision:mobilenet_v3_small", weights=tmp_path / "mnv3.pth")
    assert bb.out_dim == 1024 and "classifier.3" in bb.tap
    assert bb.embed(face_crops(224)).shape == (2, 1024)
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    r50 = BACKBONES.build("resnet50_imagenet", weights=tmp_path / "r50.pth")
    assert (r50.name, r50.out_dim, r50.input_size) == ("resnet50_imagenet", 2048, 224)
    assert "torchvision_resnet50" in r50.weights_info()


@pytest.mark.parametrize(("model", "dim"), [("squeezenet1_1", 512), ("mnasnet0_5", 1280)])
def test_torchvision_conv_head_and_versioned_state(model, dim, tmp_path) -> None:
    """SqueezeNet has no Linear head (pooled trunk instead); MNASNet checks the state dict's
    ``_metadata`` version, which loading must keep."""
    import torchvision

    torch.save(torchvision.models.get_model(model).state_dict(), tmp_path / "w.pth")
    bb = BACKBONES.build(f"torchvision:{model}", weights=tmp_path / "w.pth")
    assert bb.out_dim == dim and bb.embed(face_crops(224)).shape == (2, dim)


def test_torchvision_wrong_weights_and_missing(tmp_path, no_weights_anywhere) -> None:
    import torchvision

    sd = torchvision.models.resnet18().state_dict()
    sd["fc.weight"] = torch.zeros(10, 512)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError, match=r"wrong shape: fc.weight: file \(10, 512\) vs model \(1000, 512\)"
    ):
        BACKBONES.build("torchvision:resnet18", weights=tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing"):
        BACKBONES.build("torchvision:resnet34", weights=tmp_path / "bad.pth")
    torch.save(torchvision.models.resnet18(), tmp_path / "pickled.pth")  # a whole pickled module
    with pytest.raises(ValueError, match="weights_only"):
        BACKBONES.build("torchvision:resnet18", weights=tmp_path / "pickled.pth")
    with pytest.raises(MissingWeightsError) as e:
        BACKBONES.build("resnet50_imagenet")
    msg = str(e.value)
    assert "resnet50-11ad3fa6.pth" in msg and "https://download.pytorch.org" in msg
    assert "AVEMO_WEIGHTS_TORCHVISION_RESNET50" in msg
    with pytest.raises(ValueError, match="unknown torchvision"):
        BACKBONES.build("torchvision", model="resnet5")


# ---------------------------------------------------------------- architectures in the project


def _randomised(net: nn.Module) -> nn.Module:
    """Random weights and BN statistics, so loading mistakes cannot hide behind identity BNs."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return net.eval()


def _arch(name: str):
    from avemo.extract.video.backbones import hsemotion_enet_b0, ir50, vggface2_resnet50

    return {
        "ir50": (
            ir50.IR50,
            {"head.kernel": torch.zeros(512, 7)},
            (112, 512, "output_layer.3.weight"),
        ),
        "vggface2_resnet50": (
            vggface2_resnet50.caffe_resnet50,
            {"fc.weight": torch.zeros(8631, 2048)},
            (224, 2048, "layer4.0.conv1.weight"),
        ),
        "hsemotion_enet_b0": (
            hsemotion_enet_b0.EfficientNetB0,
            {"classifier.weight": torch.zeros(8, 1280)},
            (224, 1280, "conv_head.weight"),
        ),
    }[name]


@pytest.mark.parametrize("name", ["ir50", "vggface2_resnet50", "hsemotion_enet_b0"])
def test_user_weight_architectures(name, tmp_path, monkeypatch) -> None:
    build, head, (size, dim, some_key) = _arch(name)
    ref = _randomised(build())
    # a DataParallel-style checkpoint with a classifier head the tap ignores
    state = {
        "module." + k: v for k, v in {**ref.state_dict(), **head}.items() if "num_batches" not in k
    }
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    bb = BACKBONES.build(name, weights=tmp_path / "w.pth", batch_size=1)
    assert (bb.input_size, bb.out_dim, bb.grayscale) == (size, dim, False)
    crops = face_crops(size, bb.align_margin)
    got = bb.embed(crops)
    with torch.no_grad():
        want = ref(normalise(crops, bb.mean, bb.std, bb.bgr))
    assert got.shape == (2, dim) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)
    assert len(bb.weights_info()[name]) == 64
    # the same file through the environment variable
    monkeypatch.setenv(f"AVEMO_WEIGHTS_{name.upper()}", str(tmp_path / "w.pth"))
    from avemo.extract.weights import resolve

    assert resolve(bb.weight.name) == tmp_path / "w.pth"
    # a wrong-shaped dict: one clear error naming the key and both shapes, plus the layout
    bad = dict(ref.state_dict())
    bad[some_key] = torch.zeros(3, *bad[some_key].shape[1:])
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError, match=rf"wrong shape: {some_key}: file \(3,.*Expected key layout"
    ):
        BACKBONES.build(name, weights=tmp_path / "bad.pth")


def test_ir50_lfan_style_checkpoint(tmp_path) -> None:
    """LFAN wraps IR-50 as ``backbone.*`` + ``logits.*`` and trains on small crops (5x5 final map)."""
    from avemo.extract.video.backbones.ir50 import IR50

    ref = _randomised(IR50(input_size=80))
    state = {"backbone." + k: v for k, v in ref.state_dict().items()}
    state["logits.weight"], state["logits.bias"] = torch.zeros(8, 512), torch.zeros(8)
    torch.save(state, tmp_path / "lfan.pth")
    with pytest.raises(ValueError, match="input_size=80"):
        BACKBONES.build("ir50", weights=tmp_path / "lfan.pth")
    bb = BACKBONES.build("ir50", weights=tmp_path / "lfan.pth", input_size=80)
    crops = face_crops(80)
    with torch.no_grad():
        want = ref(normalise(crops, bb.mean, bb.std))
    torch.testing.assert_close(bb.embed(crops), want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", ["ir50", "vggface2_resnet50", "hsemotion_enet_b0"])
def test_user_weight_architectures_missing(name, no_weights_anywhere) -> None:
    with pytest.raises(MissingWeightsError) as e:
        BACKBONES.build(name)
    msg = str(e.value)
    assert f"AVEMO_WEIGHTS_{name.upper()}" in msg and ".pth" in msg and "weights" in msg


def test_tf_same_padding_is_asymmetric() -> None:
    from avemo.extract.video.backbones.hsemotion_enet_b0 import SameConv

    torch.manual_seed(0)
    conv = SameConv(2, 3, 3, 2, bias=False)
    x = torch.randn(1, 2, 8, 8)
    want = torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (0, 1, 0, 1)), conv.weight, stride=2
    )
    torch.testing.assert_close(conv(x), want)


def test_registry_lists_every_backbone() -> None:
    for name in (
        "fer2013_minixception",
        "arcface_r50",
        "resnet50_imagenet",
        "torchvision",
        "torchvision:resnet18",
        "vggface2_resnet50",
        "ir50",
        "hsemotion_enet_b0",
    ):
        assert name in BACKBONES
    t = arcface_template(112, 0.0)
    assert np.allclose(t[0], [38.2946, 51.6963], atol=1e-4)
    t2 = arcface_template(64, 0.25)  # template shrunk to 1/1.25 of the side, centred
    assert np.allclose((t2 - 32) * 1.25 * 112 / 64, t - 56, atol=1e-3)
