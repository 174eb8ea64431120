"""Frame-level descriptor feature sets on real labelled speech (EmoDB, 22.05 kHz, 2.0 s clips):
``egemaps_lld`` / ``compare_lld`` (openSMILE) and ``pitch_swiftf0`` (swift-f0) run clean through
the real runner and HDF5 store on a fixed 24-file sample (status ok, finite, documented shapes,
rates and row times), ``pitch_swiftf0`` on all 411 files (fast), pitch values make sense (female
speakers higher than male), and a missing opensmile is one message naming the extra (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _emodb import emodb_manifest

from avemo.data.store import FeatureFile
from avemo.extract.runner import run_features

# 2.0 s clip at 16 kHz: (rows, row shape, rate, first time stamp) as each module documents
EXPECTED = {
    "egemaps_lld": (196, (25,), 100.0, 0.01),
    "compare_lld": (195, (130,), 100.0, 0.03),
    "pitch_swiftf0": (125, (4,), 62.5, 0.0),
}
FEMALE = {"08", "09", "13", "14", "16"}  # EmoDB's speaker sheet; the others are male


@pytest.fixture(scope="module")
def sample(shared_data) -> pd.DataFrame:
    pytest.importorskip("opensmile", reason="opensmile is the optional [smile] extra")
    return emodb_manifest(shared_data, 24)


@pytest.fixture(scope="module")
def written(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("descriptors")
    return run_features(sample, list(EXPECTED), out, progress=False, batch_clips=8)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_emodb_sample_extracts_clean(written, sample, name):
    rows, row_shape, rate, first = EXPECTED[name]
    n = len(sample)
    with FeatureFile(written[name]) as f:
        assert len(f) == n and f.status_counts() == {"ok": n}
        assert f.row_shape == row_shape and f.provenance["rate_hz"] == rate
        data = f.load_all()
    assert np.isfinite(data.values).all() and data.mask.all()
    counts = np.diff(data.offsets)
    # compare_lld: openSMILE's last frames leave the 10 ms grid in one of its two tables; cut there
    assert (counts <= rows).all() and (counts >= rows - 3).all()
    for i in range(n):
        ts = data.timestamps[data.offsets[i] : data.offsets[i + 1]]
        np.testing.assert_allclose(ts[0], first, atol=1e-6)
        np.testing.assert_allclose(np.diff(ts), 1.0 / rate, atol=1e-6)
        assert ts[-1] <= 2.0
    assert data.values.std(axis=0).max() > 0  # not constant


def test_compare_lld_columns_are_lld_then_deltas():
    from avemo.extract.audio.opensmile_lld import CompareLld, EgemapsLld

    pytest.importorskip("opensmile")
    names = CompareLld().feature_names()
    assert len(names) == 130 and all("_de" in n for n in names[65:]) and names[0] == "F0final_sma"
    assert [n.replace("_sma", "_sma_de") for n in names[:65]] == names[65:]
    assert len(EgemapsLld().feature_names()) == 25


def test_pitch_all_411_files_and_female_speakers_higher(shared_data, tmp_path):
    """All 411 EmoDB files (swift-f0 is fast); median voiced pitch per speaker: every female
    speaker above every male one (EmoDB's speaker sheet)."""
    df = emodb_manifest(shared_data, None)
    path = run_features(df, ["pitch_swiftf0"], tmp_path, progress=False)["pitch_swiftf0"]
    med = {}
    with FeatureFile(path) as f:
        assert f.status_counts() == {"ok": 411} and f.row_shape == (4,)
        data = f.load_all()
        assert np.isfinite(data.values).all()
        for cid in df["clip_id"]:
            v = f.clip(cid).values
            voiced = v[:, 2] > 0.5
            assert set(np.unique(v[:, 2])) <= {0.0, 1.0}
            assert ((v[:, 1] >= 0) & (v[:, 1] <= 1)).all()
            if voiced.any():
                med[cid] = np.median(v[voiced, 0])
    assert len(med) > 400  # speech: almost every clip has voiced frames
    by = pd.Series(med).groupby(lambda c: c[:2]).median()
    fem = by[by.index.isin(FEMALE)]
    male = by[~by.index.isin(FEMALE)]
    assert len(fem) == 4 and len(male) == 4
    assert fem.min() > male.max(), by.to_dict()
    hz = 27.5 * 2 ** (by / 12)
    assert ((hz > 80) & (hz < 350)).all(), hz.to_dict()  # adult speech


def test_interpolate_unvoiced():
    from avemo.extract.audio.pitch import interpolate_unvoiced

    st = np.array([0, 10, 0, 0, 16, 0], np.float32)
    v = np.array([0, 1, 0, 0, 1, 0], bool)
    np.testing.assert_allclose(interpolate_unvoiced(st, v), [10, 10, 12, 14, 16, 16])
    assert (interpolate_unvoiced(st, np.zeros(6, bool)) == 0).all()


def test_missing_opensmile_is_one_message_exit_2(tmp_path):
    """Without the [smile] extra: `avemo features -s compare_lld` says how to install it, exit 2,
    no traceback, no feature file."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "opensmile.py").write_text("raise ImportError('opensmile blocked for this test')\n")
    wav = (
        Path(__file__).resolve().parents[2]
        / "shared"
        / "data"
        / "emodb-8spk"
        / "wav"
        / "03a01Fa.wav"
    )
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"clip_id": ["a"], "audio": [str(wav)]}).to_csv(manifest, index=False)
    env = {**os.environ, "PYTHONPATH": f"{block}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "avemo",
            "features",
            "-m",
            str(manifest),
            "-s",
            "compare_lld",
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert "pip install avemo[smile]" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "compare_lld.h5").exists()


def test_speech_emotion_config_trains_on_these_files(written, sample, tmp_path):
    """The ready config runs on a corpus given only as overrides (manifest + feature files;
    the two spectral streams dropped with null), speaker-independent split."""
    import json

    from avemo.cli import main

    manifest = tmp_path / "m.csv"
    sample.assign(split="train").to_csv(manifest, index=False)  # split: the manifest contract
    args = [
        "fuse-train",
        "-c",
        "speech_emotion",
        f"data.manifest={manifest}",
        f"data.features.compare={written['compare_lld']}",
        f"data.features.egemaps={written['egemaps_lld']}",
        f"data.features.pitch={written['pitch_swiftf0']}",
        "data.features.logmel=null",
        "data.features.speech=null",
        "data.features.speaker=null",
        "data.features.func=null",
        "model.late=null",
        "trainer.max_epochs=3",
        f"output.dir={tmp_path / 'runs'}",
        "-q",
    ]
    # 24 clips: a label held by one speaker only cannot be in training when that speaker is tested
    assert main(args) == 2
    assert main([*args[:-1], "split.label_coverage=warn", "-q"]) == 0
    run = next((tmp_path / "runs" / "speech_emotion").iterdir())
    notes = json.loads((run / "data_report.json").read_text())["notes"]
    assert any(
        "which the training partition lacks" in n and "label_coverage=warn" in n for n in notes
    )
    split = json.loads((run / "splits.json").read_text())
    assert not set(split["subjects"]["train"]) & set(split["subjects"]["test"])
    assert (run / "predictions.csv").exists()
