"""MTCNN on real faces, batching, and ArcFace-template alignment."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from avemo.extract.registry import DETECTORS
from avemo.extract.video import detectors  # noqa: F401 - registers
from avemo.extract.video.align import (
    ARCFACE_112,
    align_faces,
    similarity,
    template,
    transform_points,
)
from avemo.extract.video.tracks import iou
from avemo.extract.weights import MissingWeightsError

pytestmark = pytest.mark.usefixtures("extract_one_thread")  # conftest: one thread, plugins loaded


@pytest.fixture(scope="module")
def mtcnn():
    return DETECTORS.build("mtcnn", min_face_size=20)


@pytest.fixture(scope="module")
def mtcnn40():
    return DETECTORS.build("mtcnn", min_face_size=40)


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_mtcnn_weights_load_with_checksums(mtcnn):
    info = mtcnn.weights_info()
    assert set(info) == {"mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"}
    assert info["mtcnn_pnet"].startswith("a2a71925")


def test_astronaut_face_box_and_landmarks(mtcnn, astronaut):
    faces = mtcnn.detect(astronaut[None])[0]
    assert len(faces) == 1 and faces.scores[0] > 0.99
    x1, y1, x2, y2 = faces.boxes[0]
    # facenet-pytorch's own MTCNN.detect on this image (fixtures/make_mtcnn_reference.py)
    ref = json.loads((Path(__file__).parent / "fixtures" / "mtcnn_reference.json").read_text())
    want = np.asarray(ref["detections"]["avemo_20/astronaut"]["boxes"][0])
    assert np.abs(faces.boxes[0] - want).max() < 0.05 * (want[2] - want[0])
    (lx, ly), (rx, ry) = faces.landmarks[0, 0], faces.landmarks[0, 1]
    assert lx < rx and abs(ly - ry) < 8  # left eye left of right eye, level
    assert x1 < lx < rx < x2 and y1 < ly < y2


def test_multi_face_image_finds_five(mtcnn40, media):
    faces = mtcnn40.detect([_rgb(media("multi_face.jpg"))])[0]
    assert len(faces) == 5
    assert np.all(faces.scores > 0.9)
    assert np.all(np.diff(faces.scores) <= 0)  # best first


def test_batched_detection_matches_single_frames(mtcnn40, astronaut, media):
    mtcnn = mtcnn40
    multi = _rgb(media("multi_face.jpg"))
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    batch = mtcnn.detect([astronaut, multi, flipped])
    for frame, got in zip([astronaut, multi, flipped], batch, strict=True):
        alone = mtcnn.detect(frame[None])[0]
        assert len(alone) == len(got)
        np.testing.assert_allclose(np.sort(got.boxes, 0), np.sort(alone.boxes, 0), atol=0.5)
    # the mirrored astronaut's face is mirrored too
    bx = batch[2].boxes[0]
    assert abs((512 - bx[2]) - batch[0].boxes[0, 0]) < 6


def test_no_face_in_blank_frame(mtcnn):
    assert len(mtcnn.detect(np.full((2, 120, 160, 3), 128, np.uint8))[0]) == 0


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")
def test_similarity_matches_insightface_estimate_norm():
    from insightface.utils.face_align import estimate_norm

    rng = np.random.default_rng(0)
    lmk = (ARCFACE_112 * 1.6 + [130, 40] + rng.normal(0, 2, (5, 2))).astype(np.float32)
    for size in (112, 224):
        ref = estimate_norm(lmk, size)
        np.testing.assert_allclose(similarity(lmk, template(size))[0], ref, atol=1e-3)


def test_template_margin_matches_backbone_contract():
    from avemo.extract.video.backbones.base import arcface_template

    np.testing.assert_allclose(template(64, 0.25), arcface_template(64, 0.25), atol=1e-4)


@pytest.mark.parametrize(("size", "margin"), [(224, 1.0), (160, 0.6)])
def test_aligned_eyes_land_on_template(mtcnn, astronaut, size, margin):
    faces = mtcnn.detect(astronaut[None])[0]
    crop = align_faces([astronaut], [0], faces.landmarks[:1], size=size, margin=margin)
    assert crop.shape == (1, size, size, 3) and crop.dtype == np.uint8
    again = mtcnn.detect(crop)[0]  # re-detect landmarks on the aligned crop
    assert len(again) >= 1
    want = template(size, margin)
    eyes = np.linalg.norm(again.landmarks[0, :2] - want[:2], axis=1)
    assert eyes.max() < 3.0, f"eye error {eyes} px"  # eyes land on the template
    # all five points land where the transform sends the original landmarks
    moved = transform_points(similarity(faces.landmarks[:1], want), faces.landmarks[:1])[0]
    assert np.linalg.norm(again.landmarks[0] - moved, axis=1).max() < 3.0


def test_align_handles_many_faces_and_none(astronaut):
    lmk = np.stack([ARCFACE_112 + [150, 50], ARCFACE_112 * 0.8 + [10, 10]])
    crops = align_faces([astronaut, astronaut], [0, 1], lmk, size=64, margin=0.25)
    assert crops.shape == (2, 64, 64, 3)
    assert align_faces([astronaut], [], np.zeros((0, 5, 2)), 64).shape == (0, 64, 64, 3)


def test_scrfd_without_a_model_pack_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="buffalo_l") as e:
        DETECTORS.build("scrfd")
    assert "mtcnn" in str(e.value)
    with pytest.raises(MissingWeightsError):
        DETECTORS.build("retinaface", weights=str(tmp_path / "my_pack"))


def test_torch_backend_used_on_gpu_agrees_with_opencv_backend(astronaut, media):
    """The GPU path (interpolate + roi_align) runs here on CPU and must find the same faces."""
    det = DETECTORS.build("mtcnn", min_face_size=40)
    multi = _rgb(media("multi_face.jpg"))
    ref = det.detect([astronaut, multi])
    det.backend = "torch"
    got = det.detect([astronaut, multi])
    for a, b in zip(ref, got, strict=True):
        assert len(a) == len(b)
        assert iou(a.boxes, b.boxes).max(1).min() > 0.8  # same faces, boxes within a few pixels


def test_size_hint_searches_only_nearby_scales(mtcnn, astronaut):
    full = mtcnn.detect(astronaut[None])[0]
    side = float(full.boxes[0, 2] - full.boxes[0, 0])
    hinted = mtcnn.detect(astronaut[None], sizes=[(side / 2, side * 2)])[0]
    assert len(hinted) == 1 and iou(full.boxes, hinted.boxes)[0, 0] > 0.9
    assert (
        len(mtcnn.detect(astronaut[None], sizes=[(side * 4, side * 8)])[0]) == 0
    )  # wrong sizes only
