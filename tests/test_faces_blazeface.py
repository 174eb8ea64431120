"""BlazeFace full-range: the npm model file, its torch/ONNX reading against the TFLite runtime's own
outputs, decoding, keypoint alignment, the MTCNN fallback and the pipeline on real footage."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from avemo.data.pypi_fetch import sha256_file
from avemo.extract.base import ClipInput
from avemo.extract.registry import DETECTORS, FEATURE_SETS
from avemo.extract.video.align import ARCFACE_112, align_faces, template
from avemo.extract.video.detectors import blazeface as bf

REF = Path(__file__).parent / "fixtures" / "blazeface_reference.json"


pytestmark = pytest.mark.usefixtures("extract_one_thread")  # conftest: one thread, plugins loaded


@pytest.fixture(scope="module")
def det():
    return DETECTORS.build("blazeface")


@pytest.fixture(scope="module")
def mtcnn():
    return DETECTORS.build("mtcnn", thresholds=[0.6, 0.7, 0.8], min_face_size=20)


def _facenet(name: str):
    """facenet-pytorch's own MTCNN on ``name`` (fixtures/make_mtcnn_reference.py): the yardstick."""
    from types import SimpleNamespace

    doc = json.loads((Path(__file__).parent / "fixtures" / "mtcnn_reference.json").read_text())
    d = doc["detections"][f"avemo_20/{name}"]
    return SimpleNamespace(boxes=np.asarray(d["boxes"]), landmarks=np.asarray(d["landmarks"]))


def _image(name, media):
    if name == "astronaut":
        import skimage.data

        return skimage.data.astronaut()
    return cv2.cvtColor(cv2.imread(str(media(name))), cv2.COLOR_BGR2RGB)


def test_model_file_from_npm_is_checksummed(det):
    assert det.path.name == "face_detection_full_range.tflite"
    assert sha256_file(det.path) == bf.WEIGHT.sha256
    assert det.weights_info() == {"blazeface_full_range": bf.WEIGHT.sha256}


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_outputs_match_the_tflite_runtime(backend, media):
    """Raw outputs at the strongest anchors equal LiteRT's (fixture made by LiteRT itself)."""
    doc = json.loads(REF.read_text())
    assert doc["tflite_sha256"] == bf.WEIGHT.sha256
    d = DETECTORS.build("blazeface", backend=backend)
    imgs = [_image(e["image"], media) for e in doc["images"]]
    reg, logits, _ = d.raw(imgs)
    for e, r, c in zip(doc["images"], reg, logits, strict=True):
        idx = np.array(e["anchors"])
        np.testing.assert_allclose(c[idx], e["logits"], atol=2e-3)
        np.testing.assert_allclose(r[idx], e["regressors"], atol=2e-2, rtol=1e-3)
        assert set(np.argsort(-c)[:3]) <= set(e["anchors"])


def test_anchors_are_a_48x48_row_major_grid():
    a = bf.anchors()
    assert a.shape == (2304, 2)
    np.testing.assert_allclose(a[0], [0.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(a[1], [1.5 / 48, 0.5 / 48])  # x runs fastest
    np.testing.assert_allclose(a[48], [0.5 / 48, 1.5 / 48])


def test_weighted_nms_averages_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    kps = np.repeat(boxes[:, None, :2], 6, 1)
    b, k, s = bf.weighted_nms(boxes, kps, np.array([0.9, 0.6, 0.8], np.float32), 0.3)
    assert len(b) == 2 and s.tolist() == pytest.approx([0.9, 0.8])
    np.testing.assert_allclose(b[0], [0.4, 0.4, 10.4, 10.4], atol=1e-5)  # (0.9*0 + 0.6*1) / 1.5
    np.testing.assert_allclose(k[0, 0], [0.4, 0.4], atol=1e-5)
    np.testing.assert_allclose(b[1], boxes[2])


def test_six_keypoints_become_the_template_five_under_a_similarity():
    ang, s, t = np.deg2rad(20), 2.5, np.array([300.0, 120.0])
    rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    four = np.stack([ARCFACE_112[0], ARCFACE_112[1], ARCFACE_112[2], ARCFACE_112[3:].mean(0)])
    six = np.concatenate([four, [[20.0, 60.0], [95.0, 60.0]]])  # ears: not used
    got = bf.five_points((six @ rot.T + t)[None])
    np.testing.assert_allclose(got[0], ARCFACE_112 @ rot.T + t, atol=1e-3)


def test_real_faces_boxes_and_landmarks_agree_with_mtcnn(det, media):
    astro = _image("astronaut", media)
    got, ref = det.detect([astro])[0], _facenet("astronaut")
    assert len(got) == 1 and got.scores[0] > 0.5
    iod = np.linalg.norm(ref.landmarks[0, 0] - ref.landmarks[0, 1])
    err = np.linalg.norm(got.landmarks[0] - ref.landmarks[0], axis=1) / iod
    assert (
        err[:3].max() < 0.15 and err.max() < 0.3
    )  # eyes + nose close; mouth corners: template width
    assert got.landmarks[0, 0, 0] < got.landmarks[0, 1, 0]  # image-left eye first, as the template
    c_got, c_ref = got.boxes[0].reshape(2, 2).mean(0), ref.boxes[0].reshape(2, 2).mean(0)
    assert np.linalg.norm(c_got - c_ref) < 0.25 * iod * 2
    multi = _image("multi_face.jpg", media)
    assert len(det.detect([multi])[0]) == len(_facenet("multi_face.jpg").boxes) == 5
    assert len(det.detect([np.zeros((720, 1280, 3), np.uint8)])[0]) == 0


def test_aligned_crop_puts_the_eyes_on_the_template(det, media):
    astro = _image("astronaut", media)
    faces = det.detect([astro])[0]
    crop = align_faces([astro], [0], faces.landmarks[:1], 112, 1.0)[0]  # face: half the crop
    again = det.detect([cv2.resize(crop, (448, 448))])[0]  # detect in the crop, scaled x4
    assert len(again) == 1
    np.testing.assert_allclose(again.landmarks[0, :2] / 4, template(112, 1.0)[:2], atol=4)
    # a face filling the whole frame is outside the full-range model's training (it scores ~0.55,
    # under the 0.65 threshold): the default detector's MTCNN fallback finds it
    tight = cv2.resize(align_faces([astro], [0], faces.landmarks[:1], 112, 0.0)[0], (448, 448))
    assert len(det.detect([tight])[0]) == 0
    assert len(DETECTORS.build("blazeface_mtcnn").detect([tight])[0]) == 1


def test_mtcnn_fallback_runs_only_where_blazeface_finds_nothing(media, mtcnn):
    both = DETECTORS.build("blazeface_mtcnn", min_face_size=20)
    astro = _image("astronaut", media)
    tiny = np.zeros((1080, 1920, 3), np.uint8)  # a 30-px face: 3 px at BlazeFace's 192 input
    face = cv2.resize(astro[20:260, 120:340], (30, 33), interpolation=cv2.INTER_AREA)
    tiny[500:533, 900:930] = face
    res = both.detect([astro, tiny])
    assert both.fallback_frames == 1  # the astronaut was found by BlazeFace itself
    assert len(res[0]) == 1 and len(res[1]) == len(mtcnn.detect([tiny])[0])
    assert len(both.primary.detect([tiny])[0]) == 0
    assert "blazeface_full_range" in both.weights_info() and "mtcnn_pnet" in both.weights_info()


def test_default_pipeline_is_blazeface_with_fallback_on_real_video(media):
    fs = FEATURE_SETS.build("face_fer2013", {}, "cpu")
    assert fs.config["detector"] == "blazeface_mtcnn"
    assert fs.config["thresholds"] == bf.BlazeFace.default_thresholds  # resolved, so recorded
    fs.workers = 0
    (r,) = fs.extract([ClipInput("s", str(media("single_face.mp4")))])
    fs.close()
    assert r.status == "ok" and r.mask.all() and r.values.shape == (len(r.mask), 128)
    prov = fs.provenance()
    assert "blazeface_full_range" in prov["weights"] and prov["config"]["thresholds"] == [0.65]
    assert FEATURE_SETS.build("face_fer2013", {"detector": "mtcnn"}, "cpu").config[
        "thresholds"
    ] == [0.6, 0.7, 0.8]


def test_subject_found_in_every_ravdess_frame(shared_data):
    videos = sorted((shared_data / "ravdess-a05" / "video").glob("02-*.mp4"))[:3]
    fs = FEATURE_SETS.build("face_crops", {"crop_size": 32}, "cpu")
    fs.workers = 0
    res = list(fs.extract([ClipInput(p.stem, str(p)) for p in videos]))
    fs.close()
    assert len(res) == 3
    for r in res:
        assert r.status == "ok" and r.mask.mean() >= 0.99, (r.clip_id, r.mask.mean())
