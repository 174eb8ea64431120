"""Real labelled speech (EmoDB, 22.05 kHz, 2.0 s): every audio feature set with weights here
runs clean on a fixed sample of 40 files through the real runner and HDF5 store (status ok,
no NaN/inf, documented shapes and rates). The all-411 run is the audio benchmark
(`python -m avemo.bench --only audio`), whose table reports the same checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _emodb import emodb_manifest

from avemo.data.store import FeatureFile
from avemo.extract.runner import run_features

# rows for a 2.0 s clip at 16 kHz (32,000 samples), as documented by each feature set
EXPECTED = {
    "spectrogram": (201, (257,), 100.0),
    "logmel": (201, (64,), 100.0),
    "mfcc": (201, (39,), 100.0),
    "speech_embedding": ((((32000 - 512) // 160 + 1) - 76) // 8 + 1, (96,), 12.5),
}


@pytest.fixture(scope="module")
def emodb_sample(shared_data) -> pd.DataFrame:
    return emodb_manifest(shared_data, 40)  # all speakers


@pytest.fixture(scope="module")
def written(emodb_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("emodb_features")
    return run_features(emodb_sample, list(EXPECTED), out, progress=False, batch_clips=8)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_emodb_sample_extracts_clean(written, emodb_sample, name):
    rows, row_shape, rate = EXPECTED[name]
    with FeatureFile(written[name]) as f:
        assert len(f) == len(emodb_sample) == 40
        assert f.status_counts() == {"ok": 40}
        assert f.row_shape == row_shape and f.provenance["rate_hz"] == rate
        data = f.load_all()
    assert np.isfinite(data.values).all()
    assert (np.diff(data.offsets) == rows).all()
    assert data.mask.all()
    ts = data.timestamps.reshape(40, rows)
    np.testing.assert_allclose(np.diff(ts, axis=1), 1.0 / rate, atol=1e-9)
    assert (ts[:, -1] <= 2.0).all()


def test_emodb_anger_has_more_high_frequency_energy(written, emodb_sample):
    """Value sanity on real labelled speech. These EmoDB copies are peak-normalised, so loudness
    is gone; spectral tilt is not: high-arousal anger puts far more of its energy above 1 kHz
    than sadness, boredom or neutral speech (log ratio, over each clip's louder half)."""
    from avemo.extract.audio import frontends as F

    fb = F.mel_filterbank(16000, 512, 64, 0.0, None, False, "slaney")
    high = np.linspace(0, 8000, 257)[fb.argmax(axis=1)] > 1000.0
    tilt = {}
    with FeatureFile(written["logmel"]) as f:
        for cid in emodb_sample["clip_id"]:
            p = np.exp(f.clip(cid).values.astype(np.float64))
            loud = p.sum(axis=1) > np.median(p.sum(axis=1))
            tilt[cid] = np.log(p[loud][:, high].sum() / p[loud][:, ~high].sum())
    by = emodb_sample.assign(t=emodb_sample["clip_id"].map(tilt)).groupby("label")["t"].mean()
    for calm in ("sadness", "boredom", "neutral"):
        assert by["anger"] > by[calm] + 1.5, by.to_dict()
