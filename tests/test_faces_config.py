"""Face feature-set config mistakes are refused before any clip is read: exit 2, one line naming
the key, nothing written; provenance and windowed rows carry what they should."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from avemo.cli import main
from avemo.errors import FeatureConfigError
from avemo.extract.registry import FEATURE_SETS, load_all


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, media) -> Path:
    root = tmp_path_factory.mktemp("faces")
    path = root / "manifest.csv"
    pd.DataFrame(
        [
            {
                "clip_id": "c0",
                "video": str(media("single_face.mp4")),
                "split": "train",
                "subject": "s0",
                "label": "neutral",
            }
        ]
    ).to_csv(path, index=False)
    return path


def refused(capsys, manifest: Path, out: Path, setting: str, *needles: str) -> None:
    argv = [
        "features",
        "-m",
        str(manifest),
        "-o",
        str(out),
        "-q",
        "-s",
        "face_fer2013",
        "--set",
        setting,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("avemo features: error:") and "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ("face_fer2013:detect_every=0", ("detect_every", ">= 1", "got 0")),
        ("face_fer2013:full_detect_every=0", ("full_detect_every", ">= 1")),
        ("face_fer2013:max_faces=0", ("max_faces", ">= 1")),
        ("face_fer2013:batch_frames=-4", ("batch_frames", ">= 1")),
        ("face_fer2013:min_face_size=-1", ("min_face_size", ">= 0")),
        ("face_fer2013:fps=0", ("fps", "> 0")),
        ("face_fer2013:thresholds=1.5", ("thresholds", "<= 1")),
        ("face_fer2013:stable_every=0", ("stable_every", ">= 1")),
        ("face_fer2013:stable_iou=1.5", ("stable_iou", "<= 1")),
        ("face_fer2013:fallback_every=0", ("fallback_every", ">= 1")),
    ],
)
def test_face_config_out_of_range_is_refused(manifest, tmp_path, capsys, setting, needles) -> None:
    refused(capsys, manifest, tmp_path / "f", setting, "feature set face_fer2013", *needles)


def test_thresholds_that_do_not_fit_the_detector(manifest, tmp_path, capsys) -> None:
    out = tmp_path / "f"
    argv = [
        "features",
        "-m",
        str(manifest),
        "-o",
        str(out),
        "-q",
        "-s",
        "face_fer2013",
        "--set",
        "face_fer2013:detector=mtcnn",
        "--set",
        "face_fer2013:thresholds=[0.6,0.7]",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "thresholds" in err and "mtcnn needs 3 thresholds" in err
    assert not out.exists()
    load_all()
    with pytest.raises(FeatureConfigError, match="mtcnn needs 3 thresholds"):
        FEATURE_SETS.build("face_fer2013", {"detector": "mtcnn", "thresholds": [0.6, 0.7]}, "cpu")


def test_face_provenance_records_the_video_libraries_only() -> None:
    import soundfile  # noqa: F401 - imported in this process: still not a face set's library

    load_all()
    versions = FEATURE_SETS.build("face_fer2013", {}, "cpu").provenance()["versions"]
    assert "cv2_build" in versions and "libsndfile" not in versions


def test_detection_schedule_is_in_the_provenance_and_reaches_the_pipeline() -> None:
    """Every key that changes which frames the detectors see is in the config hash."""
    load_all()
    over = {"stable_every": 2, "stable_iou": 0.7, "fallback_every": 2}
    fs = FEATURE_SETS.build("face_fer2013", over, "cpu")
    assert {k: fs.provenance()["config"][k] for k in over} == over
    pipe = fs.pipeline()
    assert (pipe.stable_every, pipe.stable_iou, fs.detector().fallback_every) == (2, 0.7, 2)
    default = FEATURE_SETS.build("face_fer2013", {}, "cpu").provenance()
    for k, v in over.items():
        assert (
            FEATURE_SETS.build("face_fer2013", {k: v}, "cpu").provenance()["config_hash"]
            != default["config_hash"]
        ), k
    mtcnn = FEATURE_SETS.build("face_fer2013", {"detector": "mtcnn"}, "cpu")
    assert not hasattr(
        mtcnn.detector(), "fallback_every"
    )  # a detector without the key still builds


def test_list_shows_identity_embeddings_and_clip_backbones(capsys) -> None:
    assert main(["list", "identities"]) == 0
    assert any(ln.startswith("dlib_resnet ") for ln in capsys.readouterr().out.splitlines())
    assert main(["list", "clip-backbones"]) == 0
    assert any(ln.startswith("r2plus1d_18 ") for ln in capsys.readouterr().out.splitlines())
