"""Every registered stage-one plugin, parametrised over the registries (a newly registered feature
set, face backbone, detector or identity embedding is tested here with no test edits).

The registry key is written once, in the decorator; ``cls.name`` is read back from the registry
(``RegisteredName``), so what provenance records is exactly the registered key."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from avemo.data.registry import RegisteredName, Registry
from avemo.errors import FeatureConfigError, UserError
from avemo.extract import registry as R
from avemo.extract.video.backbones.base import StateDictBackbone
from avemo.extract.video.backbones.torchvision_models import TorchvisionBackbone
from avemo.extract.weights import MissingWeightsError

R.load_all()
REGISTRIES = {
    n: getattr(R, n)
    for n in ("FEATURE_SETS", "DETECTORS", "BACKBONES", "CLIP_BACKBONES", "AUDIO", "IDENTITIES")
}
CLASSES = [
    (reg, key)
    for reg, r in REGISTRIES.items()
    for key in r.names()
    if isinstance(r.get(key), type) and hasattr(r.get(key), "name")
]


@pytest.mark.parametrize(("reg", "key"), CLASSES, ids=[f"{r}:{k}" for r, k in CLASSES])
def test_name_is_the_registered_key(reg: str, key: str) -> None:
    r = REGISTRIES[reg]
    cls = r.get(key)
    assert cls.name == key == r.name_of(cls)
    written = [c.__name__ for c in cls.__mro__ if isinstance(vars(c).get("name"), str)]
    assert not written, f"{written} repeat the key: it belongs in the decorator only"


def test_registered_name_descriptor() -> None:
    reg: Registry = Registry("thing")

    class Base:
        name = RegisteredName(reg)

    @reg.register("a")
    class A(Base):
        pass

    class Sub(A):  # not registered: the nearest registered base's key
        pass

    @reg.register("b")
    class B(A):
        pass

    assert (Base.name, A.name, Sub.name, B.name, A().name, B().name) == (
        "",
        "a",
        "a",
        "b",
        "a",
        "b",
    )
    obj = A()
    obj.name = "a:variant"  # an instance may name itself (torchvision:MODEL)
    assert obj.name == "a:variant" and A.name == "a"
    assert reg.name_of(B()) == "b"


FEATURE_SETS = R.FEATURE_SETS.names()


@pytest.mark.parametrize("name", FEATURE_SETS)
def test_feature_set_defaults_and_unknown_key(name: str) -> None:
    cls = R.FEATURE_SETS.get(name)
    try:
        fs = R.FEATURE_SETS.build(name)  # defaults; no weights are read at construction
    except FeatureConfigError as e:
        if "optional extra" not in str(e):
            raise
        # e.g. the openSMILE sets without the [smile] extra: refused with the install hint, exit 2
        assert "pip install avemo[" in str(e)
        pytest.skip(f"{name}: {e}")
    assert fs.name == name and set(fs.config) == set(cls.default_config)
    assert fs.modality in ("audio", "video")
    assert fs.rate_hz is None or fs.rate_hz > 0
    with pytest.raises(FeatureConfigError, match=rf"feature set {name}: no_such_key: unknown key"):
        cls.check_config({"no_such_key": 1})
    assert issubclass(FeatureConfigError, UserError)  # the CLI's exit-2 class
    try:
        prov = fs.provenance()
    except MissingWeightsError:
        return  # user / not-yet-fetched weights: provenance needs their sha256
    assert prov["feature_set"] == name
    assert len(prov["config_hash"]) == 16


def test_every_feature_set_is_listed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "avemo", "list", "feature-sets"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    # sets other test modules registered in this process are not the CLI's to list
    packaged = {n for n in FEATURE_SETS if R.FEATURE_SETS.get(n).__module__.startswith("avemo.")}
    assert packaged and packaged <= listed
    rates = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
    assert rates["logmel"] == "100" and rates["speech_embedding"] == "12.5"  # "<rate> Hz" column
    assert out.count(" Hz ") >= 5 and "video frames" in out and "frames/8" in out


DETECTORS = R.DETECTORS.names()


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_threshold_check_names_the_detector(name: str) -> None:
    cls = R.DETECTORS.get(name)
    assert cls.name == name
    with pytest.raises(ValueError, match=rf"^{name} needs"):
        cls.check_thresholds([0.5] * ((cls.n_thresholds or 0) + 1) if cls.n_thresholds else [])


# torchvision:MODEL entries are one class with a model option; "torchvision" stands for them all
BACKBONES = [n for n in R.BACKBONES.names() if isinstance(R.BACKBONES.get(n), type)]


def _generated_weights(cls: type, tmp_path) -> tuple[str, dict]:
    """A randomly initialised state dict of the right layout, or for the ONNX ArcFace a small
    ONNX graph with its input / output signature (test_backbones_zoo.export_onnx)."""
    import torchvision.models as tvm

    from avemo.extract.video.backbones.arcface_onnx import ArcFaceR50

    if cls is ArcFaceR50:
        from test_backbones_zoo import export_onnx

        export_onnx(tmp_path / "generated.onnx")
        return str(tmp_path / "generated.onnx"), {}
    if issubclass(cls, StateDictBackbone):
        net = cls.build(cls.__new__(cls))
        options: dict = {}
    elif issubclass(cls, TorchvisionBackbone):
        model = "resnet18" if cls is TorchvisionBackbone else "resnet50"
        net = tvm.get_model(model, weights=None)
        options = {"model": model} if cls is TorchvisionBackbone else {}
    else:
        raise AssertionError(f"{cls.__name__}: no generated weights for this kind of backbone")
    torch.manual_seed(0)
    path = tmp_path / "generated.pth"
    torch.save(net.state_dict(), path)
    return str(path), options


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_forward_shape(name: str, tmp_path) -> None:
    cls = R.BACKBONES.get(name)
    try:
        bb = R.BACKBONES.build(name, batch_size=2)  # weights available here (cache / hub)
    except MissingWeightsError:
        path, options = _generated_weights(cls, tmp_path)  # weights not obtainable offline
        bb = R.BACKBONES.build(name, weights=path, batch_size=2, **options)
    assert bb.name.split(":")[0] == name
    s = bb.input_size
    crops = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (2, s, s, 3), dtype=np.uint8)
    )
    out = bb.embed(crops)
    assert out.shape[0] == 2 and out.shape[-1] == bb.out_dim and torch.isfinite(out).all()


# ------------------------------------------------------------------ a face backbone is one file

ONE_FILE_BACKBONE = '''"""A face backbone in one file (docs/tutorials/extending.md's recipe): no other edit."""
from torch import nn

from avemo.extract.registry import BACKBONES
from avemo.extract.video.backbones.base import StateDictBackbone
from avemo.extract.weights import WeightSpec, register_weight

WEIGHT = register_weight(WeightSpec(name="one_file_net", filename="one_file_net.pth", licence="test",
                                    note="generated by the test"))


@BACKBONES.register("one_file_net")
class OneFileNet(StateDictBackbone):
    """Test-only face CNN, 64x64 grey -> 32-d."""

    weight = WEIGHT
    input_size = 64
    out_dim = 32
    grayscale = True
    mean, std = (127.5,), (127.5,)
    align_margin = 0.1
    tap = "global average pool after conv3, 32-d"
    layout = "0.weight, 0.bias, 2.weight, 2.bias, 4.weight, 4.bias"

    def build(self) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
'''


def test_a_face_backbone_in_one_file_is_listed_and_extracts(tmp_path, monkeypatch, media) -> None:
    """The file alone (``AVEMO_PLUGINS``): ``avemo list`` shows the backbone and its derived
    ``face_one_file_net`` set, ``avemo features`` extracts a real clip with it, and the rows are
    the network applied to the aligned crops ``face_crops`` cuts from the same clip."""
    import os

    import pandas as pd
    from fixtures.generated_weights import generated_state, state_shapes

    from avemo.data.store import FeatureFile
    from avemo.extract.base import ClipInput

    (tmp_path / "one_file_backbone.py").write_text(ONE_FILE_BACKBONE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AVEMO_PLUGINS", "one_file_backbone")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "AVEMO_DECODE_WORKERS": "0",
    }
    cli = [sys.executable, "-m", "avemo"]

    lists = "from avemo.cli import main; main(['list', 'backbones']); print('--'); main(['list', 'feature-sets'])"
    out = subprocess.run(
        [sys.executable, "-c", lists], capture_output=True, text=True, env=env, check=True
    )
    backbones, sets = (part.split() for part in out.stdout.split("\n--\n"))
    assert "one_file_net" in backbones and "face_one_file_net" in sets

    R.load_all()  # in this process too: the same derived set, the default pipeline + the backbone
    cls = R.BACKBONES.get("one_file_net")
    assert R.FEATURE_SETS.get("face_one_file_net").default_config == {
        **R.FEATURE_SETS.get("face_crops").common_config,
        "backbone": "one_file_net",
        "backbone_weights": None,
    }
    weights = tmp_path / "one_file_net.pth"
    torch.save(generated_state(state_shapes(cls.build(cls.__new__(cls)))), weights)

    clip = media("single_face.mp4")
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(
        {
            "clip_id": ["c"],
            "video": [str(clip)],
            "split": ["train"],
            "subject": ["s"],
            "label": ["neutral"],
        }
    ).to_csv(manifest, index=False)
    done = subprocess.run(
        [
            *cli,
            "features",
            "-m",
            str(manifest),
            "-s",
            "face_one_file_net",
            "--set",
            f"face_one_file_net:backbone_weights={weights}",
            "-o",
            str(tmp_path / "f"),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with FeatureFile(tmp_path / "f" / "face_one_file_net.h5") as ff:
        assert ff.provenance["config"]["backbone"] == "one_file_net"
        got = ff.clip("c")

    crops_set = R.FEATURE_SETS.build("face_crops", {"crop_size": 64, "align_margin": 0.1}, "cpu")
    crops_set.workers = 0
    try:
        (crops,) = crops_set.extract([ClipInput("c", video=str(clip))])
    finally:
        crops_set.close()
    assert got.status == crops.status == "ok" and got.mask.sum() > 0
    np.testing.assert_array_equal(got.mask, crops.mask)
    np.testing.assert_array_equal(got.timestamps, crops.timestamps)
    net = R.BACKBONES.build("one_file_net", weights=str(weights))
    want = net.embed(torch.from_numpy(crops.values[crops.mask.astype(bool)])).numpy()
    np.testing.assert_allclose(got.values[got.mask.astype(bool)], want, rtol=1e-4, atol=1e-5)
