"""Provenance: a rerun / a reader with another config is refused, naming the differing keys
(nested config keys, weight checksums); versions and creation time never count."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from avemo.data.store import (
    ClipFeatures,
    ConfigMismatchError,
    FeatureFile,
    FeatureFileError,
    FeatureWriter,
    config_hash,
    make_provenance,
    write_clips,
)

CONFIG = {"stft": {"n_fft": 512, "hop": 160, "window": "hann"}, "n_mels": 64, "bands": [0, 8000]}
WEIGHTS = {"onet": "a" * 64, "pnet": "b" * 64}


def prov(config=CONFIG, weights=WEIGHTS, versions=None, name="logmel"):
    return make_provenance(name, config, weights, 100.0, versions or {"torch": "2.14.1"})


def clip(cid: str, n: int = 3) -> ClipFeatures:
    return ClipFeatures(cid, np.full((n, 2), 1.5, np.float32), np.arange(n) / 100, np.ones(n, bool))


def changed() -> dict:
    cfg = {**CONFIG, "stft": {**CONFIG["stft"], "n_fft": 1024}, "bands": [0, 4000]}
    return prov(cfg, {**WEIGHTS, "onet": "c" * 64})


def test_hash_ignores_versions_and_time_but_not_config_or_weights() -> None:
    a, b = prov(), prov(versions={"torch": "9.9"})
    assert a["config_hash"] == b["config_hash"] == config_hash(b)
    assert a["config_hash"] != changed()["config_hash"]
    assert a["config_hash"] != prov(name="mfcc")["config_hash"]
    assert prov({"x": 1, "y": 2})["config_hash"] == prov({"y": 2, "x": 1})["config_hash"]


def assert_names_keys(msg: str) -> None:
    assert "config.stft.n_fft: cached 512 != requested 1024" in msg
    assert "config.bands: cached [0, 8000] != requested [0, 4000]" in msg
    assert f"weights.onet: cached {'a' * 64!r} != requested {'c' * 64!r}" in msg
    for same in ("config.stft.hop", "config.n_mels", "weights.pnet", "versions", "created"):
        assert same not in msg


def test_rerun_on_final_file_with_other_config_is_refused(tmp_path: Path) -> None:
    w = FeatureWriter(tmp_path / "logmel.h5", prov())
    w.add(clip("a"))
    w.finalize()
    FeatureWriter(tmp_path / "logmel.h5", prov(versions={"torch": "3.0"}))  # versions don't count
    with pytest.raises(ConfigMismatchError) as ei:
        FeatureWriter(tmp_path / "logmel.h5", changed())
    assert_names_keys(str(ei.value))
    assert str(tmp_path / "logmel.h5") in str(ei.value)


def test_rerun_on_uncommitted_shards_with_other_config_is_refused(tmp_path: Path) -> None:
    w = FeatureWriter(tmp_path / "logmel.h5", prov(), shard_clips=1)
    w.add(clip("a"))  # committed as a shard, never finalized (killed run)
    with pytest.raises(ConfigMismatchError) as ei:
        FeatureWriter(tmp_path / "logmel.h5", changed())
    assert_names_keys(str(ei.value))
    assert "logmel.h5.shards" in str(ei.value)


def test_added_and_removed_keys_are_named(tmp_path: Path) -> None:
    path = write_clips(tmp_path / "s.h5", [clip("a")], prov())
    cfg = {k: v for k, v in CONFIG.items() if k != "n_mels"} | {"fmin": 20}
    with FeatureFile(path) as ff, pytest.raises(ConfigMismatchError) as ei:
        ff.check(prov(cfg))
    msg = str(ei.value)
    assert "config.fmin: cached '<absent>' != requested 20" in msg
    assert "config.n_mels: cached 64 != requested '<absent>'" in msg


def test_reader_check(tmp_path: Path) -> None:
    path = write_clips(tmp_path / "s.h5", [clip("a"), clip("b", 0)], prov())
    with FeatureFile(path) as ff:
        ff.check(prov(versions={"numpy": "1.0"}))
        assert ff.provenance["config"] == CONFIG and ff.provenance["weights"] == WEIGHTS
        assert ff.provenance["rate_hz"] == 100.0 and ff.provenance["feature_set"] == "logmel"
        with pytest.raises(ConfigMismatchError) as ei:
            ff.check(changed())
        assert_names_keys(str(ei.value))


def test_consolidation_never_mixes_configs(tmp_path: Path) -> None:
    """A shard made with another config slipped into the folder (e.g. copied by hand)."""
    w = FeatureWriter(tmp_path / "s.h5", prov(), shard_clips=1)
    w.add(clip("a"))
    write_clips(w.shard_dir / "shard-r1-000001.h5", [clip("b")], changed())
    with pytest.raises(ConfigMismatchError, match="shard-r1-000001.h5"):
        w.finalize()
    assert not (tmp_path / "s.h5").exists()


def test_unreadable_files_give_one_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(FeatureFileError, match="not a readable HDF5 feature file"):
        FeatureFile(junk)
    good = write_clips(tmp_path / "good.h5", [clip("a", 50)], prov())
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # what a non-atomic write leaves
    with pytest.raises(FeatureFileError):
        FeatureFile(cut)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(FeatureFileError, match=r"lacks \['values'"):
        FeatureFile(tmp_path / "foreign.h5")
    with pytest.raises(FileNotFoundError, match="avemo features"):
        FeatureFile(tmp_path / "absent.h5")
    with pytest.raises(KeyError, match="clip 'zz' is not in"):
        FeatureFile(good).clip("zz")
