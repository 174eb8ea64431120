"""``compare_functionals`` / ``egemaps_functionals`` on real labelled speech (EmoDB, 22.05 kHz
files, extracted at their own rate so no resampler stands between): through the real runner and
HDF5 store, one row per clip at the clip's centre, equal to what openSMILE's own
``process_file`` gives for the file (the library is the reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from _emodb import emodb_manifest

from avemo.data.store import FeatureFile
from avemo.extract.runner import run_features

RATE = 22050  # EmoDB's files
SETS = {"compare_functionals": ("ComParE_2016", 6373), "egemaps_functionals": ("eGeMAPSv02", 88)}


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> pd.DataFrame:
    pytest.importorskip("opensmile", reason="opensmile is the optional [smile] extra")
    return emodb_manifest(shared_data, 6)


@pytest.fixture(scope="module")
def written(sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("functionals")
    rate = {"sample_rate": RATE}
    return run_features(
        sample, list(SETS), out, overrides={n: rate for n in SETS}, progress=False, batch_clips=4
    )


@pytest.mark.parametrize("name", list(SETS))
def test_one_row_per_clip_equal_to_opensmile_on_the_file(written, sample, name):
    import opensmile

    smile_set, n_cols = SETS[name]
    ref = opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, smile_set),
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    with FeatureFile(written[name]) as f:
        assert f.row_shape == (n_cols,) and f.status_counts() == {"ok": len(sample)}
        assert f.provenance["rate_hz"] is None
        data = f.load_all()
    assert (np.diff(data.offsets) == 1).all()
    order = list(data.clip_ids)
    for cid, path in zip(sample["clip_id"], sample["audio"], strict=True):
        assert sf.info(path).samplerate == RATE  # the runner's rate: the file's own samples
        i = order.index(cid)
        want = ref.process_file(path).to_numpy(np.float32)[0]
        np.testing.assert_allclose(data.values[i], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(data.timestamps[i], sf.info(path).duration / 2, atol=1e-3)
