"""The install: one OpenCV, provenance of what is really imported, lock files that match the venv."""

from __future__ import annotations

import importlib.metadata as md

import cv2
import soundfile
import soxr

from avemo import lockfile
from avemo.extract.base import _versions
from avemo.extract.registry import FEATURE_SETS, load_all

OPENCV_WHEELS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)


def _installed(dist: str) -> bool:
    try:
        md.version(dist)
    except md.PackageNotFoundError:
        return False
    return True


def test_exactly_one_opencv_wheel_and_provenance_names_it() -> None:
    have = [d for d in OPENCV_WHEELS if _installed(d)]
    assert have == ["opencv-python"], f"OpenCV wheels installed side by side: {have}"
    v = _versions("video")
    assert v["cv2"] == cv2.__version__
    assert v["cv2_build"].startswith(f"opencv-python {md.version('opencv-python')}, GUI ")
    assert "also installed" not in v["cv2_build"]


def test_audio_provenance_records_the_imported_decoders() -> None:
    load_all()
    versions = FEATURE_SETS.build("logmel").provenance()["versions"]
    assert versions["soundfile"] == soundfile.__version__
    assert versions["libsndfile"] == soundfile.__libsndfile_version__
    assert versions["soxr"] == soxr.__version__
    assert "cv2" not in versions  # an audio set does not depend on OpenCV's build


def test_lock_files_pin_what_is_installed() -> None:
    texts = lockfile.lock_texts()
    base = texts["requirements.lock"]
    for name in ("torch", "opencv-python", "tqdm", "soxr"):
        assert f"{name}=={md.version(name)}\n" in base, name
    for name in ("opencv-python-headless", "opensmile", "pytest", "ruff"):
        assert f"\n{name}==" not in base, f"{name} must not be in the default install"
    assert (
        "pytest==" in texts["requirements-dev.lock"] and "ruff==" in texts["requirements-dev.lock"]
    )
    for name, text in texts.items():
        assert (lockfile.ROOT / name).read_text() == text, f"{name} is stale: run `make lock`"
