"""VGGish and PANNs CNN14 against their reference code (torchvggish 0.2, panns_inference 0.1.1).

``fixtures/audio_cnn_reference.npz`` holds what the reference front-ends and networks output on
4 s of real speech with generated weights (made by ``fixtures/make_audio_cnn_reference.py``):
torchvggish's numpy log-mel examples into its ``VGG``, with and without its PCA / quantizing
postprocessor, and panns_inference's ``Cnn14`` with its torchlibrosa front-end. Here the same
weights are rebuilt from the recorded key layout and loaded into avemo's feature sets through
the weight environment variables, so the front-end (framing, window, mel bands, log), the layer
order and the postprocessing are all held to the reference, not to avemo's own classes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avemo.extract.audio.panns import PannsCnn14
from avemo.extract.audio.vggish import Vggish

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from generated_weights import generated_state, unpack_shapes  # noqa: E402
from make_audio_cnn_reference import speech  # noqa: E402

sys.path.remove(str(FIXTURES))


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURES / "audio_cnn_reference.npz", allow_pickle=False) as z:
        return dict(z)


@pytest.fixture(scope="module")
def x():
    return speech()


def test_vggish_matches_torchvggish(ref, x, tmp_path, monkeypatch) -> None:
    torch.save(generated_state(unpack_shapes(ref, "vggish")), tmp_path / "vggish.pth")
    pca = generated_state(unpack_shapes(ref, "vggish_pca"))
    pca["pca_eigen_vectors"] = pca["pca_eigen_vectors"] * float(ref["vggish_pca.scale"])
    torch.save(pca, tmp_path / "pca.pth")
    monkeypatch.setenv("AVEMO_WEIGHTS_VGGISH", str(tmp_path / "vggish.pth"))
    monkeypatch.setenv("AVEMO_WEIGHTS_VGGISH_PCA", str(tmp_path / "pca.pth"))
    ((got, _),) = Vggish().compute([x])
    want = ref["vggish.out"]
    assert want.shape == (4, 128) and np.abs(want[0] - want[1]).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    ((q, _),) = Vggish({"postprocess": "quantized"}).compute([x])
    wq = ref["vggish.quantized"]
    assert 0 < np.mean((wq > 0) & (wq < 255)), "the fixture's PCA outputs are all clipped"
    diff = np.abs(q - wq)
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.02  # a rounding at .5 may flip


def test_panns_cnn14_matches_panns_inference(ref, x, tmp_path, monkeypatch) -> None:
    torch.save({"model": generated_state(unpack_shapes(ref, "panns"))}, tmp_path / "cnn14.pth")
    monkeypatch.setenv("AVEMO_WEIGHTS_PANNS_CNN14", str(tmp_path / "cnn14.pth"))
    ((got, _),) = PannsCnn14({"window_s": None}).compute([x])  # the 2 s as one 32 kHz window
    want = ref["panns.out"]
    assert got.shape == want.shape == (1, 2048)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3 * np.abs(want).max())
