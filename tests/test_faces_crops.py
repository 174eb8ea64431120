"""The crop each face backbone gets: measured for the emotion networks (FER2013 mini-Xception, face-api), the ArcFace template
for identity networks; zero-shot accuracy of the default crop on CREMA-D's real labelled clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avemo.bench import crops as crop_bench
from avemo.errors import FeatureConfigError
from avemo.extract.base import ClipInput
from avemo.extract.registry import BACKBONES, FEATURE_SETS, load_all
from avemo.extract.video.align import CropSpec, align_faces, crop_faces
from avemo.extract.video.backbones.fer2013_minixception import CLASSES

#: the crop bench's best rows, copied from its table (tests never read benchmarks/results)
CROP_BENCH = json.loads((Path(__file__).parent / "fixtures" / "crop_defaults.json").read_text())


def recorded_best(backbone: str) -> dict[str, str]:
    return CROP_BENCH["best"][backbone]


@pytest.fixture(scope="module", autouse=True)
def loaded():
    load_all()


@pytest.fixture(scope="module")
def recorded():
    return recorded_best("fer2013_minixception")


@pytest.mark.parametrize(
    ("backbone", "face_set"),
    [("fer2013_minixception", "face_fer2013"), ("faceapi_expression", "face_faceapi")],
)
def test_default_crop_is_the_measured_best_pooled(backbone, face_set):
    row = recorded_best(backbone)
    fs = FEATURE_SETS.build(face_set, {}, "cpu")
    assert BACKBONES.get(backbone).crop_spec().label == row["crop"], CROP_BENCH["source"]
    # box crops follow the detector's box convention: the table must be for today's default
    assert row["detector"] == fs.config["detector"], (
        f"{CROP_BENCH['source']} measured crops on {row['detector']} boxes, the default detector is now "
        f"{fs.config['detector']}: rerun python -m avemo.bench --only crops"
    )
    assert fs.crop() == BACKBONES.get(backbone).crop_spec()


@pytest.mark.parametrize("name", ["arcface_r50", "ir50"])
def test_identity_networks_keep_the_arcface_template(name):
    assert BACKBONES.get(name).crop_spec() == CropSpec("template", 0.0)


def test_crop_config_override_is_checked_and_changes_the_provenance():
    base = FEATURE_SETS.build("face_fer2013", {}, "cpu")
    tmpl = FEATURE_SETS.build(
        "face_fer2013", {"crop": {"method": "template", "margin": 0.25}}, "cpu"
    )
    assert tmpl.crop() == CropSpec("template", 0.25)
    assert base.provenance()["config_hash"] != tmpl.provenance()["config_hash"]
    assert base.provenance()["config"]["crop"] == base.crop().as_config()
    with pytest.raises(FeatureConfigError, match="crop: unknown crop keys"):
        FEATURE_SETS.build("face_fer2013", {"crop": {"method": "box", "marign": 0.1}}, "cpu")
    with pytest.raises(FeatureConfigError, match="crop: crop method"):
        FEATURE_SETS.build("face_fer2013", {"crop": {"method": "oval"}}, "cpu")


def test_crop_geometry_template_matches_align_and_box_cuts_the_box():
    # channel 0 = x, channel 1 = y: a crop's pixels say where in the frame they came from
    ys, xs = np.mgrid[0:120, 0:160]
    frame = np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8)
    lmk = np.array([[[60, 50], [90, 50], [75, 65], [63, 80], [87, 80]]], np.float32)
    box = np.array([[50, 30, 100, 100]], np.float32)  # 50 wide, 70 high, centre (75, 65)
    tmpl = crop_faces([frame], [0], box, lmk, 64, CropSpec("template", 0.25))
    np.testing.assert_array_equal(tmpl, align_faces([frame], [0], lmk, 64, 0.25))
    # stretched, margin 0: the box itself onto 50x50 (x at scale 1, y squeezed 70 -> 50)
    got = crop_faces([frame], [0], box, lmk, 50, CropSpec("box", 0.0, square=False))[0].astype(
        float
    )
    u = np.arange(50) + 0.5
    np.testing.assert_allclose(got[10, 2:-2, 0], (50 + u - 0.5)[2:-2], atol=1)
    np.testing.assert_allclose(got[2:-2, 10, 1], (30 + u * 1.4 - 0.5)[2:-2], atol=1)
    # square, 30 % tighter: a 49-px square (0.7 x the longer side) around the box centre
    sq = crop_faces([frame], [0], box, lmk, 49, CropSpec("box", -0.3))[0].astype(float)
    np.testing.assert_allclose(sq[10, 2:-2, 0], np.arange(2, 47) + 75 - 24.5, atol=1)
    np.testing.assert_allclose(sq[2:-2, 10, 1], np.arange(2, 47) + 65 - 24.5, atol=1)
    # area: the same geometry, averaged (a 4x downscale of a gradient stays a gradient)
    ar = crop_faces([frame], [0], box, lmk, 12, CropSpec("box", -0.3, interpolation="area"))[
        0
    ].astype(float)
    assert np.all(np.diff(ar[5, :, 0]) > 2) and np.all(np.diff(ar[:, 5, 1]) > 2)


def test_cremad_zero_shot_with_the_default_crop(recorded):
    """The real pipeline (default detector, tracking, crop, mini-Xception logits) on CREMA-D
    actor 1001's 6 labelled clips: no worse than the benchmark's best row minus one clip."""
    from avemo.data.assets import cremad_1001

    torch.set_num_threads(1)
    fs = FEATURE_SETS.build("face_fer2013", {"logits": True}, "cpu")
    fs.workers = 0
    clips = cremad_1001()
    truth = {p.stem: CLASSES.index(crop_bench.CREMAD_TO_FER[e]) for p, e in clips}
    right = 0
    for r in fs.extract([ClipInput(p.stem, str(p)) for p, _ in clips]):
        assert r.status == "ok" and r.mask.mean() > 0.95
        probs = torch.softmax(torch.from_numpy(r.values[r.mask][:, 128:]), 1).mean(0)
        right += int(int(probs.argmax()) == truth[r.clip_id])
    fs.close()
    measured = int(recorded["CREMA-D 1001 (6)"].split("/")[0])
    assert right >= measured - 1, f"{right}/6 right, the crop benchmark measured {measured}/6"
