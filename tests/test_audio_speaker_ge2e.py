"""speaker_ge2e against resemblyzer 0.1.4 itself: the wheel's own VoiceEncoder and audio code, run
live from the cached wheel (imported from a temporary folder, never installed), on real speech."""

from __future__ import annotations

import sys
import types
import warnings
import zipfile

import numpy as np
import pytest
from _emodb import emodb_manifest

from avemo.data.assets import cremad_1001
from avemo.data.pypi_fetch import cache_dir
from avemo.errors import FeatureConfigError
from avemo.extract.audio.decode import decode_audio
from avemo.extract.audio.speaker_ge2e import GE2E_WEIGHTS, SpeakerGe2e, normalize_volume
from avemo.extract.base import ClipInput
from avemo.extract.weights import resolve

# one torch thread: the LSTM's 480 small steps per window each end in a thread barrier, which
# on a busy 2-core machine costs more than the second thread gains (~1 s a call instead of 0.05)
pytestmark = pytest.mark.usefixtures("extract_one_thread")

SETTINGS = [(1.3, 0.75), (2.0, 0.5), (0.625, 1.0), (4.0, 0.2)]  # (rate, min_coverage)


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> types.SimpleNamespace:
    """resemblyzer's ``VoiceEncoder`` and ``audio`` module, on the same cached weights file."""
    weights = resolve(GE2E_WEIGHTS.name)  # fetches the wheel into the cache when needed
    wheels = list((cache_dir() / "wheels").glob("[Rr]esemblyzer-0.1.4-*.whl"))
    if not wheels:
        pytest.skip(f"resemblyzer 0.1.4 wheel not cached in {cache_dir() / 'wheels'}")
    folder = tmp_path_factory.mktemp("resemblyzer")
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(folder, [m for m in z.namelist() if m.endswith(".py")])
    # resemblyzer.audio imports webrtcvad at module top, for trim_long_silences only (VAD,
    # which speaker_ge2e does not apply and these tests never call): an empty module stands in
    # for that import so that no C extension is needed to run the reference.
    stub = "webrtcvad" not in sys.modules
    if stub:
        sys.modules["webrtcvad"] = types.ModuleType("webrtcvad")
    sys.path.insert(0, str(folder))
    try:
        with warnings.catch_warnings():  # its scipy.ndimage.morphology import is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import VoiceEncoder
            from resemblyzer import audio as ref_audio
    finally:
        sys.path.remove(str(folder))
        for mod in [m for m in sys.modules if m.startswith("resemblyzer")]:
            del sys.modules[mod]
        if stub:
            del sys.modules["webrtcvad"]
    encoder = VoiceEncoder("cpu", verbose=False, weights_fpath=weights)
    return types.SimpleNamespace(encoder=encoder, audio=ref_audio)


def _check_against_reference(ref, clips: list[np.ndarray]) -> float:
    """Rows, mel windows and placement of every clip under every setting; max |diff|."""
    worst = 0.0
    for rate, cover in SETTINGS:
        fs = SpeakerGe2e({"rate": rate, "min_coverage": cover})
        ours = fs.compute(clips)  # all clips' windows through one LSTM call
        for x, (rows, ts) in zip(clips, ours, strict=True):
            xn = ref.audio.normalize_volume(x, -30, increase_only=True)
            _, partials, slices = ref.encoder.embed_utterance(
                xn, return_partials=True, rate=rate, min_coverage=cover
            )
            assert rows.shape == partials.shape and rows.dtype == np.float32
            np.testing.assert_allclose(rows, partials, rtol=0, atol=1e-5)
            worst = max(worst, float(np.abs(rows - partials).max()))
            # stamps: the middle of the window's 160 centred 10 ms frames, 5 ms before the
            # middle of resemblyzer's sample slice [160 start, 160 (start + 160))
            mid = np.array([(s.start + s.stop) / 2 / 16000 for s in slices])
            np.testing.assert_allclose(ts, mid - 0.005, atol=1e-9)
            # the encoder's input: resemblyzer's mel of the padded, normalised clip
            mels, starts = fs.windows(x)
            padded = np.pad(xn, (0, max(0, slices[-1].stop - len(xn))))
            want = ref.audio.wav_to_mel_spectrogram(padded)
            want = np.stack([want[s : s + 160] for s in starts])
            np.testing.assert_allclose(mels, want, rtol=1e-4, atol=1e-6 * want.max())
    return worst


def test_equals_resemblyzer_on_real_speech_from_the_cache(ref, media):
    """Two-speaker 30 s recording (pyannote sample), its first 0.5 s (shorter than a window: one
    zero-padded row), and the six CREMA-D takes of actor 1001 (FLV, mp3 audio)."""
    sample = decode_audio(media("sample.wav")).samples
    clips = [sample, sample[:8000], sample[16000 * 6 : 16000 * 10]]
    clips += [decode_audio(path).samples for path, _ in cremad_1001()]
    worst = _check_against_reference(ref, clips)
    assert worst < 1e-5  # measured 3.6e-7 (float32 LSTM, float64 vs float32 mel)


def test_equals_resemblyzer_on_emodb(ref, shared_data):
    manifest = emodb_manifest(shared_data, 24)  # every speaker; 22.05 kHz resampled to 16 kHz
    assert (
        _check_against_reference(ref, [decode_audio(p).samples for p in manifest["audio"]]) < 1e-5
    )


def test_volume_normalisation_is_resemblyzers(ref, media):
    x = decode_audio(media("sample.wav")).samples[: 16000 * 4]
    for gain in (0.01, 0.1, 1.0, 30.0):  # quiet clips are raised, loud ones left alone
        y = np.clip(x * gain, -1, 1).astype(np.float32)
        want = ref.audio.normalize_volume(y, -30, increase_only=True)
        np.testing.assert_allclose(normalize_volume(y), want, rtol=1e-5, atol=1e-8)
    silence = np.zeros(16000, np.float32)
    assert np.array_equal(normalize_volume(silence), silence)  # no level to scale from
    ((rows, _),) = SpeakerGe2e().compute([silence])
    assert rows.shape == (1, 256) and np.isfinite(rows).all()


def test_window_placement_timestamps_and_short_clips(media):
    x = decode_audio(media("sample.wav")).samples
    fs = SpeakerGe2e()
    assert fs.step == 77 and fs.rate_hz == pytest.approx(100 / 77)
    # 2.0 s = 201 frames: windows at frames 0 and 77; the second holds 19680 of 25600 real
    # samples (0.77): kept at min_coverage 0.75, dropped at 0.8
    ((two, t2),) = fs.compute([x[:32000]])
    np.testing.assert_allclose(t2, [0.795, 1.565])
    ((one, t1),) = SpeakerGe2e({"min_coverage": 0.8}).compute([x[:32000]])
    assert len(two) == 2 and len(one) == 1 and np.array_equal(t1, t2[:1])
    np.testing.assert_allclose(one, two[:1], atol=1e-6)  # the same first window
    for n in (1, 4000, 25599):  # shorter than one window: one zero-padded row at 0.795 s
        ((rows, ts),) = fs.compute([x[16000 : 16000 + n]])
        assert rows.shape == (1, 256) and ts.tolist() == [pytest.approx(0.795)]
    np.testing.assert_allclose(np.linalg.norm(two, axis=1), 1.0, rtol=1e-5)
    assert (two >= 0).all()  # ReLU before the L2 normalisation


def test_batching_and_extract(media):
    x = decode_audio(media("sample.wav")).samples
    a, b = x[: 16000 * 3], x[16000 * 10 : 16000 * 17]
    fs = SpeakerGe2e()
    (ra, ta), (rb, tb) = fs.compute([a, b])
    ((sa, _),), ((sb, _),) = fs.compute([a]), fs.compute([b])
    np.testing.assert_allclose(ra, sa, atol=1e-6)
    np.testing.assert_allclose(rb, sb, atol=1e-6)
    (out,) = fs.extract([ClipInput("s", audio=str(media("sample.wav")))])
    assert out.status == "ok" and out.values.shape == (38, 256)
    np.testing.assert_allclose(out.timestamps, 0.795 + 0.77 * np.arange(38), atol=1e-9)
    assert fs.provenance()["weights"] == {GE2E_WEIGHTS.name: GE2E_WEIGHTS.sha256}


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"rate": 0.5}, "rate"),  # windows 2 s apart would leave gaps between 1.6 s windows
        ({"rate": 150.0}, "rate"),  # closer than one 10 ms frame
        ({"min_coverage": 0.0}, "min_coverage"),
        ({"min_coverage": 1.5}, "min_coverage"),
        ({"sample_rate": 22050}, "sample_rate"),  # the encoder is fixed to 16 kHz
        ({"normalize_volume": 1}, "normalize_volume"),
    ],
)
def test_config_mistakes_name_the_key(config: dict, key: str) -> None:
    with pytest.raises(FeatureConfigError, match=rf"^feature set speaker_ge2e: {key}: ") as e:
        SpeakerGe2e(config)
    assert "\n" not in str(e.value)
