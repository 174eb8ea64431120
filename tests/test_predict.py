"""`avemo predict`: a run trained here on real extracted features (face_fer2013 + logmel of
generated clips), copied without its training data, predicts on a new generated clip and on a
real CREMA-D take; a weight checksum that differs is refused; a frame run writes one row per
timeline frame; CLI mistakes exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml

from avemo.cli import main as cli
from avemo.data.demo import AUDIO_RATE, _encode_clip
from avemo.fusion.train import train_from_config

FACE = {"fps": 5.0}  # 5 face rows per second keeps the CPU cost of the test small
TONES = {"low": 220.0, "high": 880.0}


def _tone(freq: float, dur: float) -> np.ndarray:
    t = np.arange(int(dur * AUDIO_RATE)) / AUDIO_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, media):
    """8 generated 1 s clips (a real face video + a tone that carries the class), their
    features extracted by the real stage-one runner, and a clip run + a frame run on them."""
    from avemo.extract.runner import run_features

    tmp = tmp_path_factory.mktemp("predict")
    src = media("single_face.mp4")
    rows = []
    (tmp / "clips").mkdir()
    for i in range(8):
        lab = ["low", "high"][i % 2]
        path = tmp / "clips" / f"g{i}.mp4"
        _encode_clip(path, src, 0.2 * (i // 2), 1.0, _tone(TONES[lab] * (1 + 0.05 * (i // 2)), 1.0))
        ann = tmp / "clips" / f"g{i}.csv"
        t = np.arange(5) / 5.0
        pd.DataFrame(
            {
                "time": t,
                "valence": np.full(5, 0.5 if lab == "high" else -0.5),
                "arousal": np.linspace(-0.2, 0.2, 5),
            }
        ).to_csv(ann, index=False)
        rows.append(
            {
                "clip_id": f"g{i}",
                "video": str(path),
                "audio": str(path),
                "label": lab,
                "valence": 0.5 if lab == "high" else -0.5,
                "arousal": 0.1 * i,
                "split": "val" if i >= 6 else "train",
                "subject": f"s{i % 3}",
                "annotation": str(ann),
            }
        )
    man = tmp / "manifest.csv"
    pd.DataFrame(rows).to_csv(man, index=False)
    files = run_features(
        man,
        ["face_fer2013", "logmel"],
        tmp / "features",
        overrides={"face_fer2013": FACE},
        progress=False,
    )
    base = {
        "seed": 0,
        "data": {
            "manifest": str(man),
            "features": {"face": str(files["face_fer2013"]), "audio": str(files["logmel"])},
            "batch_size": 4,
            "non_ok": "keep",
        },
        "optim": {"name": "adam", "lr": 0.01},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "progress": "none"},
        "output": {"dir": str(tmp / "runs"), "plots": False, "verbose": False},
    }
    clip = train_from_config(
        {
            **base,
            "name": "clip",
            "task": {"type": "clip"},
            "model": {
                "name": "zhou",
                "temporal": "fan_self",
                "fusion": {"name": "fbp", "k": 2, "o": 16},
            },
        }
    )
    frame = train_from_config(
        {
            **base,
            "name": "frame",
            "task": {"type": "frame"},
            "data": {**base["data"], "window": {"length": 8, "hop": 4}},
            "model": {"name": "lfan", "visual_channels": [8, 8], "audio_channels": [4, 4]},
        }
    )
    reg = train_from_config(
        {
            **base,
            "name": "reg",
            "task": {"type": "clip_regression"},
            "eval": {"clip_range": [-0.1, 0.1]},
            "model": {"name": "late"},
        }
    )
    new = tmp / "new_clip.mp4"  # never seen in training
    _encode_clip(new, src, 1.3, 1.0, _tone(900.0, 1.0))
    return {
        "tmp": tmp,
        "clip": clip["run_dir"],
        "frame": frame["run_dir"],
        "reg": reg["run_dir"],
        "new": new,
        "files": files,
    }


def _bare_copy(run_dir, dest):
    """The run folder alone on a 'machine' without the training manifest / features."""
    shutil.copytree(run_dir, dest)
    return dest


def test_clip_run_predicts_new_and_real_clips_without_training_data(corpus, tmp_path, capsys):
    from avemo.data.assets import cremad_1001

    real = dict((e, p) for p, e in cremad_1001())["HAP"]  # cached by `make setup`: no skip
    run = _bare_copy(corpus["clip"], tmp_path / "run")
    tmp = corpus["tmp"]
    val = [str(tmp / "clips" / "g6.mp4"), str(tmp / "clips" / "g7.mp4")]  # the run's val clips
    wav = tmp_path / "speech_only.wav"  # audio without any video: no face
    sf.write(wav, _tone(880.0, 1.0), AUDIO_RATE)
    inputs = [str(corpus["new"]), str(real), *val, str(wav)]
    gone = tmp_path / "gone"  # the training data is moved away: predict must not read it
    gone.mkdir()
    for name in ("features", "manifest.csv"):
        shutil.move(str(tmp / name), gone / name)
    try:
        out = tmp_path / "out"
        assert (
            cli(["predict", str(run), *inputs, "-o", str(out), "--plot", "--device", "cpu", "-q"])
            == 0
        )
    finally:
        for name in ("features", "manifest.csv"):
            shutil.move(str(gone / name), tmp / name)
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert table["clip_id"].tolist() == ["new_clip", real.stem, "g6", "g7", "speech_only"]
    probs = table[["p_high", "p_low"]].to_numpy(float)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert set(table["pred"]) <= {"high", "low"}
    np.testing.assert_allclose(table["top_p"], probs.max(1), rtol=1e-6)
    # the run's own val predictions, reproduced from the media alone: same features, same
    # normalisation statistics, same inputs
    own = pd.read_csv(corpus["clip"] / "predictions.csv").set_index("clip_id")
    np.testing.assert_allclose(
        probs[2:4], own.loc[["g6", "g7"], ["p_high", "p_low"]].to_numpy(), atol=1e-5
    )
    assert table["missing"].tolist() == ["", "", "", "", "face"]
    # trained without modality dropout and with no face-less clip: the audio-only guess is flagged
    assert table["flagged"].tolist() == [False, False, False, False, True]
    printed = capsys.readouterr().out
    assert "new_clip" in printed and real.stem in printed
    assert sorted(
        p.name for p in (out / "plots").glob("*.png")
    ) == sorted(  # zhou: FAN attention too
        f"{c}{s}.png" for c in table["clip_id"] for s in ("", "_attention")
    )
    face_h5 = out / "features" / "face" / "face_fer2013.h5"
    stamp = face_h5.stat().st_mtime_ns
    assert cli(["predict", str(run), *inputs, "-o", str(out), "-q"]) == 0
    assert face_h5.stat().st_mtime_ns == stamp  # rerun: nothing extracted again
    again = pd.read_csv(out / "predictions.csv")
    np.testing.assert_allclose(again[["p_high", "p_low"]].to_numpy(), probs, rtol=1e-5)
    # the same run had it been trained with modality dropout: the audio-only guess is expected
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["modality_dropout"] = 0.3
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["predict", str(run), str(wav), "-o", str(out), "-q"]) == 0
    only = pd.read_csv(out / "predictions.csv")
    assert only["missing"].tolist() == ["face"] and only["flagged"].tolist() == [False]
    np.testing.assert_allclose(only[["p_high", "p_low"]].to_numpy(), probs[4:], rtol=1e-5)


def test_a_run_without_best_pt_is_applied_with_its_last_weights_by_default(corpus, tmp_path):
    """A fixed-budget run that monitors nothing (``speech_emotion``) writes only last.pt:
    plain ``avemo predict`` applies it, as ``--checkpoint last`` does (it used to refuse it for
    lacking best.pt)."""
    full = _bare_copy(corpus["clip"], tmp_path / "full")
    only_last = _bare_copy(corpus["clip"], tmp_path / "only_last")
    (only_last / "checkpoints" / "best.pt").unlink()
    clips = [str(corpus["tmp"] / "clips" / f"g{i}.mp4") for i in (6, 7)]
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(["predict", str(only_last), *clips, "-o", str(a), "--device", "cpu", "-q"]) == 0
    args = ["predict", str(full), *clips, "-o", str(b), "--checkpoint", "last", "-q"]
    assert cli([*args, "--device", "cpu"]) == 0
    got, want = pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv")
    np.testing.assert_allclose(got[["p_high", "p_low"]], want[["p_high", "p_low"]], rtol=1e-6)


def test_a_weight_with_another_checksum_is_refused(corpus, tmp_path, capsys):
    run = _bare_copy(corpus["clip"], tmp_path / "run")
    feats = json.loads((run / "features.json").read_text())
    weights = feats["face"]["provenance"]["weights"]
    name = sorted(weights)[-1]
    weights[name] = "f" * 64  # the run was trained on features from another weight file
    (run / "features.json").write_text(json.dumps(feats))
    out = tmp_path / "out"
    assert cli(["predict", str(run), str(corpus["new"]), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"weight file {name}" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not out.exists()  # refused before anything is written


@pytest.mark.parametrize("change", ["unknown_key", "key_this_avemo_adds"])
def test_a_config_key_that_cannot_be_matched_is_refused(corpus, tmp_path, capsys, change):
    run = _bare_copy(corpus["clip"], tmp_path / "run")
    feats = json.loads((run / "features.json").read_text())
    cfg = feats["face"]["provenance"]["config"]
    if change == "unknown_key":  # made by an avemo that knew a key this one does not
        cfg["old_knob"], key = 3, "old_knob"
    else:  # made by an avemo before this key existed: its default here may change the numbers
        del cfg["max_gap_s"]
        key = "max_gap_s"
    (run / "features.json").write_text(json.dumps(feats))
    out = tmp_path / "out"
    assert cli(["predict", str(run), str(corpus["new"]), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert key in err and "face (face_fer2013)" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_frame_run_writes_one_row_per_frame(corpus, tmp_path):
    from avemo.data.store import FeatureFile

    out = tmp_path / "out"
    assert (
        cli(
            [
                "predict",
                str(corpus["frame"]),
                str(corpus["new"]),
                "-o",
                str(out),
                "--plot",
                "--format",
                "parquet",
                "-q",
            ]
        )
        == 0
    )
    table = pd.read_parquet(out / "predictions.parquet")
    with FeatureFile(out / "features" / "face" / "face_fer2013.h5") as ff:
        face_rows = ff.clip("new_clip").timestamps
    assert len(table) == len(face_rows) == 5  # 1 s at the face set's 5 fps
    np.testing.assert_allclose(table["time"], face_rows)
    assert {"valence", "arousal", "face_present", "audio_present"} <= set(table.columns)
    assert np.isfinite(table[["valence", "arousal"]].to_numpy()).all()
    assert table["face_present"].all() and table["audio_present"].all()
    assert (out / "plots" / "new_clip.png").exists()
    # lfan's attention is per window of one shared timeline, not per clip: no attention figure
    assert not list((out / "plots").glob("*_attention.png"))
    # a val clip of the run: its own per-frame predictions, reproduced from the media alone
    assert (
        cli(
            [
                "predict",
                str(corpus["frame"]),
                str(corpus["tmp"] / "clips" / "g6.mp4"),
                "-o",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    mine = pd.read_csv(out / "predictions.csv")
    own = pd.read_parquet(corpus["frame"] / "predictions.parquet")
    own = own[own["clip_id"] == "g6"]
    np.testing.assert_allclose(mine["time"], own["time"])
    np.testing.assert_allclose(
        mine[["valence", "arousal"]].to_numpy(),
        own[["valence_pred", "arousal_pred"]].to_numpy(),
        atol=1e-4,
    )


def test_frame_run_with_eval_smooth_adds_the_smoothed_columns(corpus, tmp_path):
    """``eval.smooth`` (as the run's ``*_smoothed`` metrics were scored) is applied per clip."""
    import yaml
    from scipy.ndimage import uniform_filter1d

    run = _bare_copy(corpus["frame"], tmp_path / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["eval"] = {**(cfg.get("eval") or {}), "smooth": {"valence": 3}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "out"
    assert cli(["predict", str(run), str(corpus["new"]), "-o", str(out), "-q"]) == 0
    table = pd.read_csv(out / "predictions.csv")
    assert "valence_smoothed" in table and "arousal_smoothed" not in table
    np.testing.assert_allclose(
        table["valence_smoothed"],
        uniform_filter1d(table["valence"].to_numpy(), 3, mode="nearest"),
        rtol=1e-6,
    )
    assert not np.allclose(table["valence_smoothed"], table["valence"])


def test_clip_regression_run_gives_one_row_per_clip_in_the_scored_range(corpus, tmp_path):
    out = tmp_path / "out"
    assert (
        cli(
            [
                "predict",
                str(corpus["reg"]),
                str(corpus["new"]),
                str(corpus["tmp"] / "clips"),
                "-o",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "predictions.csv")
    assert table["clip_id"].tolist() == ["new_clip", *(f"g{i}" for i in range(8))]
    vals = table[["valence", "arousal"]].to_numpy()
    assert np.isfinite(vals).all() and np.abs(vals).max() <= 0.1  # eval.clip_range of the run
    own = pd.read_csv(corpus["reg"] / "predictions.csv").set_index("clip_id")
    mine = table.set_index("clip_id").loc[own.index]
    np.testing.assert_allclose(
        mine[["valence", "arousal"]].to_numpy(),
        own[["valence_pred", "arousal_pred"]].clip(-0.1, 0.1).to_numpy(),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "case", ["missing_run", "no_inputs", "not_a_run", "bad_input", "bad_manifest"]
)
def test_cli_mistakes_exit_2_and_write_nothing(corpus, tmp_path, capsys, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    (tmp_path / "m.csv").write_text("clip_id,file\na,a.mp4\n")  # no video / audio column
    args = {
        "missing_run": [str(tmp_path / "nope"), str(corpus["new"])],
        "no_inputs": [str(corpus["clip"]), str(empty)],
        "not_a_run": [str(empty), str(corpus["new"])],
        "bad_input": [str(corpus["clip"]), str(tmp_path / "missing.mp4")],
        "bad_manifest": [str(corpus["clip"]), str(tmp_path / "m.csv")],
    }[case]
    assert cli(["predict", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avemo predict: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_demo_final_step_predicts_the_real_cremad_takes(corpus, tmp_path, capsys):
    from avemo.workflows.demo import _report, predict_real_clips

    skipped: list[str] = []
    table = predict_real_clips(corpus["clip"], tmp_path, "cpu", skipped)
    assert table is not None and not skipped, skipped  # the media cache is filled by `make setup`
    assert len(table) == 6 and table["label"].str.endswith(")").all()
    probs = table[["p_high", "p_low"]].to_numpy(float)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(table["top_p"], probs.max(1), rtol=1e-6)
    assert table["pred"].tolist() == [["high", "low"][i] for i in probs.argmax(1)]
    _report({"dir": tmp_path, "manifest": "m.csv", "features": {}, "skipped": [], "real": table})
    out = capsys.readouterr().out
    assert "true label" in out and "1001_DFA_ANG_XX" in out and "angry (ANG)" in out
    assert "face net zero-shot" in out and "its probability" in out


def test_demo_shows_the_default_face_sets_zero_shot_reading(corpus, tmp_path, capsys):
    """Issue 19.6: beside the trained run, each CREMA-D take as the default face set's own network
    reads it (top class, probability). Held to the labels: no worse than the crop benchmark's
    recorded count for that network's default crop, minus one take (the pipeline tracks and
    interpolates detections; the benchmark detects every frame)."""
    from avemo.bench import crops as crop_bench
    from avemo.extract.registry import FEATURE_SETS
    from avemo.workflows.demo import DEFAULT_MODALITIES, _report, predict_real_clips

    skipped: list[str] = []
    table = predict_real_clips(corpus["clip"], tmp_path, "cpu", skipped)
    assert table is not None and not skipped, skipped  # the media cache is filled by `make setup`
    fs = FEATURE_SETS.build(DEFAULT_MODALITIES["face"], {"logits": True}, "cpu")
    backbone = fs.config["backbone"]
    classes = fs.logit_classes()
    assert len(table) == 6 and set(table["zero_shot"]) <= set(classes)
    assert ((table["zero_shot_p"] > 1 / len(classes)) & (table["zero_shot_p"] <= 1)).all()
    codes = table["label"].str.extract(r"\((\w+)\)")[0]
    truth = codes.map(crop_bench.LABELS)
    read = table["zero_shot"].map(crop_bench.NET_CLASSES[backbone])
    right = int((read == truth).sum())
    # the crop bench's best row for this backbone (tests/fixtures/crop_defaults.json, from its table)
    row = json.loads((Path(__file__).parent / "fixtures" / "crop_defaults.json").read_text())[
        "best"
    ][backbone]
    from avemo.extract.registry import BACKBONES

    assert BACKBONES.get(backbone).crop_spec().label == row["crop"], (
        f"{backbone}: not the bench's best crop"
    )
    measured = int(row["CREMA-D 1001 (6)"].split("/")[0])
    assert right >= measured - 1, (
        f"{right}/6 read right zero-shot, the crop benchmark measured {measured}/6"
    )
    # the same network on crops cut independently (the benchmark's path: detection on every frame,
    # no tracking, ``predict_proba``): the demo's softmax of its logit columns must match it
    from avemo.data.assets import cremad_1001
    from avemo.extract.registry import BACKBONES

    net = BACKBONES.build(backbone)
    variant = crop_bench.Variant(net.crop_spec())
    det = fs.detector()
    for (path, _), (_, r) in zip(cremad_1001(), table.iterrows(), strict=True):
        assert r["clip_id"] == path.stem
        frames = [f for ch in crop_bench.iter_frames(path) for f in ch.frames]
        idx, boxes, lmks = crop_bench.detect_subject(det, frames)
        crops = crop_bench.cut(frames, idx, boxes, lmks, net.input_size, variant)
        ref = net.predict_proba(torch.from_numpy(crops)).numpy().mean(0)
        top2 = np.sort(ref)[-2:]
        assert abs(r["zero_shot_p"] - ref.max()) < 0.08, (r["clip_id"], r["zero_shot_p"], ref)
        if top2[1] - top2[0] > 0.1:  # a clear winner must be the demo's reading
            assert r["zero_shot"] == net.classes[int(ref.argmax())], (
                r["clip_id"],
                r["zero_shot"],
                ref,
            )
    _report({"dir": tmp_path, "manifest": "m.csv", "features": {}, "skipped": [], "real": table})
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("1001_DFA_")}
    for (
        _,
        r,
    ) in table.iterrows():  # every take's line: true label, trained prediction, zero-shot reading
        ln = lines[r["clip_id"]]
        assert (
            r["label"] in ln
            and str(r["pred"]) in ln
            and r["zero_shot"] in ln
            and f"{r['zero_shot_p']:.3f}" in ln
        )
