"""IR-50, VGGFace2 ResNet-50 and HSEmotion EfficientNet-B0 against their reference code.

``fixtures/backbone_reference.npz`` holds what face.evoLVe's ``IR_50``, VGGFace2-pytorch's
``resnet50`` and timm's ``tf_efficientnet_b0`` output on an aligned real face, each with its own
documented preprocessing, when loaded with generated weights (``fixtures/generated_weights.py``;
made by ``fixtures/make_backbone_reference.py``). Here the same weights are rebuilt from the
recorded key layout, saved as a checkpoint and loaded into avemo's port through the registry, so
a wrong layer, stride, padding, key mapping, colour order or normalisation fails the comparison.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avemo.extract.registry import BACKBONES
from avemo.extract.video import backbones as _backbones  # noqa: F401 - registers

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from generated_weights import generated_state, unpack_shapes  # noqa: E402

sys.path.remove(str(FIXTURES))


def _maker():
    spec = importlib.util.spec_from_file_location(
        "make_backbone_reference", FIXTURES / "make_backbone_reference.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURES / "backbone_reference.npz", allow_pickle=False) as z:
        return dict(z)


@pytest.mark.parametrize("name", ["ir50", "vggface2_resnet50", "hsemotion_enet_b0"])
def test_port_matches_reference_code(name, ref, tmp_path) -> None:
    state = generated_state(unpack_shapes(ref, name), scale=tuple(ref[f"{name}.scale"]))
    torch.save(state, tmp_path / f"{name}.pth")
    bb = BACKBONES.build(name, weights=tmp_path / f"{name}.pth", batch_size=2)
    size, margin = int(ref[f"{name}.size"]), float(ref[f"{name}.margin"])
    assert bb.input_size == size
    crops = torch.from_numpy(_maker().face_crops(size, margin))
    got = bb.embed(crops).numpy()
    want = ref[f"{name}.out"]
    # the fixture is informative: the face and its mirror image give different embeddings
    assert np.abs(want[0] - want[1]).max() > 0.01 * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
