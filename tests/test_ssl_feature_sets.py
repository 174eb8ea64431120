"""speech_wavlm / speech_hubert / speech_wav2vec2 held to transformers' own models.

The real checkpoints cannot be fetched here, so each test builds a small randomly initialised
model of the real architecture (2 layers, width 32, the published 7-layer CNN with its 320-sample
hop), saves it with ``save_pretrained`` and points the feature set at that folder: the path a
user's downloaded checkpoint takes. Audio: the real 30 s speech recording from the cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

transformers = pytest.importorskip(
    "transformers", reason="the [ssl] extra (requirements-dev.lock pins it)"
)

from avemo.data.store import FeatureFile  # noqa: E402
from avemo.extract.audio.ssl_encoders import window_plan  # noqa: E402
from avemo.extract.base import ClipInput  # noqa: E402
from avemo.extract.registry import FEATURE_SETS, load_for  # noqa: E402

FAMILIES = {"wavlm": "WavLM", "hubert": "Hubert", "wav2vec2": "Wav2Vec2"}
SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}


def small_model_folder(folder: Path, family: str, seed: int = 0, **over) -> Path:
    """A randomly initialised ``family`` model of small width saved in the hub layout."""
    name = FAMILIES[family]
    config = getattr(transformers, f"{name}Config")(**{**SMALL, **over})
    torch.manual_seed(seed)
    getattr(transformers, f"{name}Model")(config).save_pretrained(folder)
    return folder


def reference(folder: Path, family: str, x: np.ndarray) -> np.ndarray:
    """transformers' own forward: hidden states ``[F, L+1, D]`` of one signal."""
    net = getattr(transformers, f"{FAMILIES[family]}Model").from_pretrained(folder).eval()
    with torch.inference_mode():
        hs = net(
            torch.from_numpy(np.asarray(x, np.float32))[None], output_hidden_states=True
        ).hidden_states
    return torch.stack(hs, 2)[0].numpy()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    load_for(["speech_wavlm"])
    root = tmp_path_factory.mktemp("ssl")
    out = {f: small_model_folder(root / f, f) for f in FAMILIES}
    out["wavlm_layer"] = small_model_folder(
        root / "wavlm_layer",
        "wavlm",
        feat_extract_norm="layer",
        conv_bias=True,
        do_stable_layer_norm=True,
    )
    return out


@pytest.fixture(scope="module")
def speech(media) -> np.ndarray:
    x, sr = sf.read(str(media("sample.wav")), dtype="float32")
    assert sr == 16000 and x.ndim == 1
    return x


def build(family: str, folder: Path, **config):
    return FEATURE_SETS.build(
        f"speech_{family}", {"backbone_weights": str(folder), **config}, "cpu"
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_layer_equals_transformers_hidden_states(folders, speech, family) -> None:
    x = speech[16000 : 16000 * 5 + 123]
    fs = build(family, folders[family], store_dtype="float32")
    ((v, t),) = fs.compute([x])
    ref = reference(folders[family], family, x)
    assert v.shape == ref.shape == (len(ref), 3, 32) and fs.row_shape() == (3, 32)
    np.testing.assert_allclose(v, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.diff(t), 0.02)
    ((last, _),) = build(family, folders[family], store_dtype="float32", layers="last").compute([x])
    np.testing.assert_allclose(last, ref[:, -1], rtol=1e-5, atol=1e-5)
    ((some, _),) = build(family, folders[family], store_dtype="float32", layers=[2, 0]).compute([x])
    np.testing.assert_allclose(some, ref[:, [2, 0]], rtol=1e-5, atol=1e-5)


def test_long_clip_equals_its_windows_where_they_do_not_overlap(folders, speech) -> None:
    x = speech[: 16000 * 9 + 777]
    fs = build("wavlm", folders["wavlm"], store_dtype="float32", window_s=3.0, overlap_s=1.0)
    ((v, t),) = fs.compute([x])
    whole = reference(folders["wavlm"], "wavlm", x)
    assert v.shape == whole.shape  # one row per frame of the clip's own grid
    np.testing.assert_allclose(t, (np.arange(len(v)) * 320 + 200) / 16000)
    owners: dict[int, list[tuple[int, np.ndarray]]] = {}  # frame -> (distance to edge, row)
    for start in range(0, len(x), 32000):  # windows of 48000 samples every 32000
        ref = reference(folders["wavlm"], "wavlm", x[start : start + 48000])
        for j in range(len(ref)):
            owners.setdefault(start // 320 + j, []).append((min(j, len(ref) - 1 - j), ref[j]))
        if start + 48000 >= len(x):
            break
    single = [g for g, r in owners.items() if len(r) == 1]
    assert len(single) > len(v) // 2 and sorted(owners) == list(range(len(v)))
    for g, rows in owners.items():
        errs = {d: np.abs(v[g] - r).max() for d, r in rows}
        # every row is one of its windows' rows: in an overlap, the window whose edge is farther
        assert min(errs.values()) < 1e-4 and errs[max(errs)] < 1e-4, (g, errs)
    assert np.abs(v - whole).max() > 1e-3  # and not the whole clip's run: the windows did differ


def test_window_plan_covers_each_frame_once() -> None:
    frames = lambda n: max(0, (n - 400) // 320 + 1)  # noqa: E731 - the published CNN's frame count
    for n in (400, 47_999, 48_000, 48_001, 80_320, 160_000 + 5):
        plan = window_plan(n, 48_000, 32_000, 320, frames)
        kept = np.concatenate([a // 320 + np.arange(lo, hi) for a, _, lo, hi in plan])
        np.testing.assert_array_equal(kept, np.arange(frames(n)))


def test_timestamps_are_receptive_field_centres(folders) -> None:
    """Frame g's rows depend on exactly the samples around its time stamp (autograd says which)."""
    fs = build("wavlm", folders["wavlm_layer"], store_dtype="float32")
    x = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0)).requires_grad_()
    cnn = fs.net().feature_extractor  # LayerNorm CNN: no statistics over time
    feats = cnn(x)
    ((_, t),) = fs.compute([x.detach().numpy()[0]])
    for g in (0, 7, feats.shape[-1] - 1):
        (grad,) = torch.autograd.grad(feats[0, :, g].sum(), x, retain_graph=True)
        used = np.flatnonzero(grad[0].numpy())
        assert t[g] * 16000 == pytest.approx((used[0] + used[-1] + 1) / 2)


def test_batches_never_change_a_clips_numbers(folders, speech) -> None:
    clips = [
        speech[: 16000 * 2],
        speech[20000 : 20000 + 16000 * 3 + 5],
        speech[: 16000 * 2],
        speech[5000:9000],
    ]
    for key in (
        "wavlm",
        "wavlm_layer",
    ):  # GroupNorm CNN: equal lengths only; LayerNorm: masked padding
        fs = build("wavlm", folders[key], store_dtype="float32", batch_size=4)
        together = fs.compute(clips)
        for c, (v, _) in zip(clips, together, strict=True):
            ((alone, _),) = fs.compute([c])
            np.testing.assert_allclose(v, alone, rtol=1e-4, atol=1e-4)


def test_pool_frames_averages_neighbours(folders, speech) -> None:
    x = speech[: 16000 * 2 + 1319]  # 103 frames: the last group holds one
    ((v, t),) = build("hubert", folders["hubert"], store_dtype="float32").compute([x])
    fs = build("hubert", folders["hubert"], store_dtype="float32", pool_frames=3)
    ((p, tp),) = fs.compute([x])
    assert fs.rate_hz == pytest.approx(50 / 3)
    n = -(-len(v) // 3)
    np.testing.assert_allclose(
        p, [v[3 * i : 3 * i + 3].mean(0) for i in range(n)], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(tp, [t[3 * i : 3 * i + 3].mean() for i in range(n)])


def test_fp16_storage_round_trip_through_the_runner(folders, media, tmp_path) -> None:
    from avemo.extract.runner import run_features
    from avemo.fusion.features import load_features

    man = pd.DataFrame({"clip_id": ["a", "b"], "audio": [str(media("sample.wav"))] * 2})
    cfg = {"backbone_weights": str(folders["wav2vec2"]), "window_s": 10.0}
    path = run_features(
        man, ["speech_wav2vec2"], tmp_path, overrides={"speech_wav2vec2": cfg}, progress=False
    )["speech_wav2vec2"]
    speech = sf.read(str(media("sample.wav")), dtype="float32")[0]
    ((want, ts),) = build(
        "wav2vec2", folders["wav2vec2"], store_dtype="float32", window_s=10.0
    ).compute([speech])
    with FeatureFile(path) as ff:
        got, got_b = ff.clip("a"), ff.clip("b")
        assert ff.dtype == np.float16 and ff.row_shape == (3, 32)
        assert ff.provenance["rate_hz"] == 50.0
    assert got.values.dtype == np.float16
    # float16 of the float32 rows: within one float16 step (the runner batched both clips, whose
    # float32 sums differ in the last bits), and mostly the very same value
    step = np.spacing(np.abs(want.astype(np.float16)))
    assert (np.abs(got.values.astype(np.float32) - want) <= step + 1e-5).all()
    assert (got.values == want.astype(np.float16)).mean() > 0.99
    np.testing.assert_allclose(got.timestamps, ts)
    arr = load_features(path)  # stage two reads float32
    a, b = arr.rows_of("b")
    assert arr.values.dtype == torch.float32
    np.testing.assert_array_equal(arr.values[a:b].numpy(), got_b.values.astype(np.float32))


def test_provenance_names_the_weights(folders, tmp_path) -> None:
    import shutil

    folder = shutil.copytree(folders["hubert"], tmp_path / "hubert")
    prov = build("hubert", folder).provenance()
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert prov["weights"]["speech_hubert/model.safetensors"] == sha
    assert (
        prov["weights"]["speech_hubert/config.json"]
        == hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
    )
    assert (
        prov["config"]["model"] == "facebook/hubert-base-ls960"
        and prov["config"]["layers"] == "all"
    )
    assert prov["rate_hz"] == 50.0
    assert prov["versions"]["transformers"] == transformers.__version__
    (folder / "avemo_source.json").write_text(
        json.dumps(
            {"repository": "facebook/hubert-base-ls960", "revision": None, "commit": "abc123"}
        )
    )
    assert build("hubert", folder).provenance()["weights"]["speech_hubert/source"] == (
        "facebook/hubert-base-ls960@abc123"
    )


def test_normalize_follows_the_preprocessor_config(folders, speech, tmp_path) -> None:
    import shutil

    folder = shutil.copytree(folders["wav2vec2"], tmp_path / "w2v")
    x = speech[: 16000 * 2] * 0.3 + 0.01
    ((plain, _),) = build("wav2vec2", folder, store_dtype="float32").compute([x])
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    ((norm, _),) = build("wav2vec2", folder, store_dtype="float32").compute([x])
    fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)  # the library's own normalisation
    z = fe(x, sampling_rate=16000, return_tensors="np").input_values[0]
    np.testing.assert_allclose(norm, reference(folder, "wav2vec2", z), rtol=1e-4, atol=1e-4)
    assert np.abs(norm - plain).max() > 1e-3


def test_missing_model_is_one_message_exit_2(tmp_path, monkeypatch, capsys, media) -> None:
    from avemo.cli import main

    monkeypatch.setenv("AVEMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AVEMO_WEIGHTS_SPEECH_WAVLM", raising=False)
    monkeypatch.delenv("AVEMO_ALLOW_DOWNLOAD", raising=False)
    man = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "clip_id": ["a"],
            "audio": [str(media("sample.wav"))],
            "split": ["train"],
            "subject": ["s1"],
            "label": ["neutral"],
        }
    ).to_csv(man, index=False)
    out = tmp_path / "out"
    assert main(["features", "-m", str(man), "-o", str(out), "-s", "speech_wavlm", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for needle in (
        "microsoft/wavlm-base-plus",
        "AVEMO_WEIGHTS_SPEECH_WAVLM",
        "AVEMO_ALLOW_DOWNLOAD=1",
    ):
        assert needle in err, err
    assert not list(out.glob("*.h5"))


def test_config_mistakes_name_the_key(folders) -> None:
    from avemo.errors import FeatureConfigError

    with pytest.raises(FeatureConfigError, match="layers"):
        build("wavlm", folders["wavlm"], layers=[0, 9]).row_shape()
    with pytest.raises(FeatureConfigError, match="overlap_s"):
        build("wavlm", folders["wavlm"], window_s=2.0, overlap_s=2.0)
    with pytest.raises(FeatureConfigError, match="layers"):
        build("wavlm", folders["wavlm"], layers="middle")


def test_list_shows_the_sets_with_their_rate(capsys) -> None:
    from avemo.cli import main

    assert main(["list", "feature-sets"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    for name in ("speech_wavlm", "speech_hubert", "speech_wav2vec2"):
        assert lines[name].split()[1:3] == ["50", "Hz"], lines[name]


def test_extract_reads_audio_like_the_other_sets(folders, media) -> None:
    fs = build("wavlm", folders["wavlm"])
    res = {
        c.clip_id: c
        for c in fs.extract([ClipInput("ok", audio=str(media("sample.wav"))), ClipInput("none")])
    }
    assert res["ok"].status == "ok" and res["ok"].values.dtype == np.float16
    assert len(res["ok"].values) == fs.n_frames(30 * 16000) and res["none"].status == "no_audio"


def test_without_the_extra_the_sets_refuse_with_the_install_hint(monkeypatch) -> None:
    from avemo.errors import FeatureConfigError
    from avemo.extract.audio import ssl_encoders

    monkeypatch.setattr(ssl_encoders, "find_spec", lambda name: None)  # as if not installed
    with pytest.raises(FeatureConfigError, match=r"optional extra: pip install avemo\[ssl\]"):
        FEATURE_SETS.build("speech_hubert")


def test_reduced_precision_runs_under_autocast(folders, speech) -> None:
    """``precision`` (float16 on a GPU by default) takes the autocast path; here bfloat16 on the
    CPU: close to float32 within bfloat16's 8-bit mantissa, and not the float32 numbers."""
    x = speech[: 16000 * 2]
    ((ref, _),) = build("wavlm", folders["wavlm"], store_dtype="float32").compute([x])
    ((low, _),) = build(
        "wavlm", folders["wavlm"], store_dtype="float32", precision="bfloat16"
    ).compute([x])
    scale = np.abs(ref).max()
    assert np.abs(low - ref).max() < 0.05 * scale and np.abs(low - ref).max() > 1e-4 * scale
