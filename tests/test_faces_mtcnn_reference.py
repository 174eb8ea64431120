"""avemo's batched MTCNN against facenet-pytorch 2.6.0's own ``MTCNN.detect`` (same weights).

``fixtures/mtcnn_reference.json`` was made by the wheel's ``mtcnn.py`` (``make_mtcnn_reference.py``)
on three real images at facenet-pytorch's default thresholds and at avemo's. The wheel is in
avemo's cache (``make setup`` takes the MTCNN weights out of it), so the fixture itself is also
checked against the wheel's code run here, with the project's torch. avemo resizes with
OpenCV's area filter and crops with ``roi_align`` where the reference uses torch's area
interpolation of each crop, so coordinates agree to a few percent of the face size, not bit for bit; the faces
found, their order-free matching, probabilities and landmarks are held to the reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from avemo.extract.registry import DETECTORS
from avemo.extract.video import detectors  # noqa: F401 - registers

FIXTURES = Path(__file__).parent / "fixtures"
REF = json.loads((FIXTURES / "mtcnn_reference.json").read_text())


pytestmark = pytest.mark.usefixtures("extract_one_thread")  # conftest: one thread, plugins loaded


@pytest.fixture(scope="module")
def images():
    sys.path.insert(0, str(FIXTURES))
    try:
        from make_fer_reference import load_image
    finally:
        sys.path.remove(str(FIXTURES))
    return {n: load_image(n) for n in ("astronaut", "single_face.jpg", "multi_face.jpg")}


def _match(got_boxes: np.ndarray, ref_boxes: np.ndarray) -> np.ndarray:
    """For each reference box, the index of the nearest detected box (by corner distance)."""
    d = np.abs(ref_boxes[:, None, :] - got_boxes[None, :, :]).max(-1)
    idx = d.argmin(1)
    assert len(set(idx.tolist())) == len(idx), "two reference faces matched one detection"
    return idx


@pytest.mark.parametrize("setting", list(REF["settings"]))
def test_detections_match_facenet_pytorch(setting, images) -> None:
    kw = REF["settings"][setting]
    det = DETECTORS.build("mtcnn", **kw)
    names = list(images)
    found = det.detect([images[n] for n in names])  # one batch of differently sized frames
    for name, got in zip(names, found, strict=True):
        ref = REF["detections"][f"{setting}/{name}"]
        rb, rp, rl = (np.asarray(ref[k], np.float64) for k in ("boxes", "probs", "landmarks"))
        assert len(got) == len(rb), f"{name}: {len(got)} faces, reference {len(rb)}"
        idx = _match(got.boxes, rb)
        side = (rb[:, 2:] - rb[:, :2]).mean(1, keepdims=True)  # box size, px
        box_err = np.abs(got.boxes[idx] - rb) / side
        lm_err = np.linalg.norm(got.landmarks[idx] - rl, axis=-1) / side
        # measured: box corners <= 0.05 of the side (the resampling), mean <= 0.02; landmarks
        # <= 0.08 (a 40 px face in multi_face.jpg); probabilities within 2e-4
        assert box_err.max() < 0.07 and box_err.mean() < 0.03, (name, box_err, got.boxes, rb)
        assert lm_err.max() < 0.1 and lm_err.mean() < 0.03, (name, lm_err)
        np.testing.assert_allclose(got.scores[idx], rp, atol=2e-3)


def test_fixture_is_what_the_cached_wheel_computes(images, tmp_path) -> None:
    """The reference code run live from the cached wheel (imported from a temporary folder, never
    installed) reproduces the fixture: it is the wheel's output, not a number written by hand."""
    import zipfile

    from avemo.data.pypi_fetch import cache_dir

    wheel = cache_dir() / "wheels" / "facenet_pytorch-2.6.0-py3-none-any.whl"
    assert wheel.exists(), f"{wheel} missing: `make setup` caches it with the MTCNN weights"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path, [m for m in z.namelist() if m.startswith("facenet_pytorch/")])
    sys.path.insert(0, str(tmp_path))
    try:
        from facenet_pytorch.models.mtcnn import MTCNN
    finally:
        sys.path.remove(str(tmp_path))
        for mod in [m for m in sys.modules if m.startswith("facenet_pytorch")]:
            del sys.modules[mod]
    for setting in ("facenet_default", "avemo_40"):
        net = MTCNN(keep_all=True, device="cpu", **REF["settings"][setting])
        for name in ("astronaut", "multi_face.jpg"):
            boxes, probs, points = net.detect(images[name], landmarks=True)
            ref = REF["detections"][f"{setting}/{name}"]
            np.testing.assert_allclose(np.array(boxes.tolist(), float), ref["boxes"], atol=0.01)
            np.testing.assert_allclose(np.array(probs.tolist(), float), ref["probs"], atol=1e-5)
            np.testing.assert_allclose(
                np.array(points.tolist(), float), ref["landmarks"], atol=0.01
            )
