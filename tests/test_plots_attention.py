"""Attention over time (``fusion.plots.plot_attention``, ``avemo predict --plot``): a zhou run
trained here on real extracted features (face_fer2013 at 5 fps, logmel at 100 Hz through an
audio CNN that pools 4 rows per step) of generated clips of different lengths, one of them with
face-less frames. Each drawn line's x-values must be the modality's own times in seconds,
computed here from the feature file's recorded rate and mask (not from the code under test),
with padded / masked positions absent rather than drawn as zeros."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from avemo.cli import main as cli
from avemo.data.demo import AUDIO_RATE, _encode_clip
from avemo.data.store import FeatureFile
from avemo.fusion.plots import attention_figure, attention_positions, pyplot

POOL_TIME = [2, 2]  # the audio CNN's time pooling: 4 logmel rows per attention step
FACE = {"fps": 5.0}
#: (clip, source, start s, duration s, label, split); noface_face.mov shows its face from 4.0 s
CLIPS = [
    ("a0", "single_face.mp4", 0.0, 1.0, "low", "train"),
    ("a1", "single_face.mp4", 0.7, 1.7, "high", "train"),
    ("a2", "noface_face.mov", 3.4, 1.4, "low", "train"),
    ("a3", "single_face.mp4", 0.3, 1.2, "high", "val"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, media):
    from avemo.extract.runner import run_features
    from avemo.fusion.train import train_from_config

    tmp = tmp_path_factory.mktemp("attention")
    (tmp / "clips").mkdir()
    rows = []
    for cid, src, start, dur, lab, split in CLIPS:
        t = np.arange(int(dur * AUDIO_RATE)) / AUDIO_RATE
        tone = (0.3 * np.sin(2 * np.pi * (220.0 if lab == "low" else 880.0) * t)).astype(np.float32)
        path = tmp / "clips" / f"{cid}.mp4"
        _encode_clip(path, media(src), start, dur, tone)
        rows.append(
            {
                "clip_id": cid,
                "video": str(path),
                "audio": str(path),
                "label": lab,
                "split": split,
                "subject": f"s{len(rows)}",
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
    res = train_from_config(
        {
            "name": "att",
            "seed": 0,
            "task": {"type": "clip"},
            "data": {
                "manifest": str(man),
                "features": {"face": str(files["face_fer2013"]), "audio": str(files["logmel"])},
                "batch_size": 4,
                "non_ok": "keep",
            },
            "model": {
                "name": "zhou",
                "temporal": "fan_self",
                "fusion": {"name": "concat"},
                "encoder": {
                    "name": "identity",
                    "per_modality": {
                        "audio": {
                            "name": "audio_cnn",
                            "channels": [4, 4],
                            "pool_time": POOL_TIME,
                            "pool_freq": [4, 4],
                        }
                    },
                },
            },
            "optim": {"name": "adam", "lr": 0.01},
            "trainer": {"max_epochs": 1, "accelerator": "cpu", "progress": "none"},
            "output": {"dir": str(tmp / "runs"), "plots": False, "verbose": False},
        }
    )
    return {
        "tmp": tmp,
        "run": res["run_dir"],
        "files": {"face": files["face_fer2013"], "audio": files["logmel"]},
    }


def _expected(path, clip_id: str, stride: int) -> tuple[np.ndarray, int]:
    """Times (s) of the valid attention steps of one clip, from the file's rate and mask alone:
    row k sits at k / rate; a step averages the valid rows among its ``stride``."""
    with FeatureFile(path) as ff:
        rate = float(ff.provenance["rate_hz"])
        mask = ff.clip(clip_id).mask.astype(bool)
    times = []
    for j in range(math.ceil(len(mask) / stride)):
        k = np.flatnonzero(mask[j * stride : (j + 1) * stride]) + j * stride
        if len(k):
            times.append(k.mean() / rate)
    return np.array(times), len(mask)


def test_each_line_is_drawn_at_its_modalitys_own_times_without_padding(trained):
    from avemo.fusion.predict import predict_files
    from avemo.fusion.run import Run

    run = Run.from_dir(trained["run"], "best")
    ids = [c[0] for c in CLIPS]
    _, extra = predict_files(run, trained["files"], ids, progress=False, attention=True)
    att = extra["attention"]
    assert sorted(att) == sorted(ids)
    strides = {"face": 1, "audio": math.prod(POOL_TIME)}
    lengths = {m: [] for m in strides}
    masked_inside = False
    plt = pyplot()
    for cid in ids:
        a = att[cid]
        assert a["strides"] == strides
        fig = attention_figure(a["attention"], a["timing"], a["strides"], cid)
        try:
            for m, stride in strides.items():
                want, n_rows = _expected(trained["files"][m], cid, stride)
                lengths[m].append(n_rows)
                lines = [
                    ln for ln in fig.axes[list(strides).index(m)].get_lines() if ln.get_gid() == m
                ]
                x = np.concatenate([ln.get_xdata() for ln in lines])
                y = np.concatenate([ln.get_ydata() for ln in lines])
                assert len(x) == len(want)  # one point per valid step: padding is not drawn
                np.testing.assert_allclose(x, want, atol=2e-3)  # container frame times round to ms
                # FAN weights are normalised over the valid steps: nothing valid was left out
                assert y.sum() == pytest.approx(1.0, abs=1e-5)
                if m == "face":  # a break in the line per stretch of face-less rows inside the clip
                    ok = _mask_of(trained["files"][m], cid)
                    masked_inside |= not ok.all()
                    assert len(lines) == 1 + int(np.sum(np.diff(np.flatnonzero(ok)) > 1))
        finally:
            plt.close(fig)
    # the check above meant something: clips of different lengths shared a padded batch, and
    # some face rows inside a clip are masked (no face found there)
    assert len(set(lengths["face"])) > 1 and len(set(lengths["audio"])) > 1
    assert masked_inside


def _mask_of(path, clip_id: str) -> np.ndarray:
    with FeatureFile(path) as ff:
        return ff.clip(clip_id).mask.astype(bool)


def test_predict_plot_writes_an_attention_png_per_clip(trained, tmp_path):
    import matplotlib.image as mpimg

    out = tmp_path / "out"
    clip = trained["tmp"] / "clips" / "a2.mp4"
    assert (
        cli(
            [
                "predict",
                str(trained["run"]),
                str(clip),
                "-o",
                str(out),
                "--plot",
                "--device",
                "cpu",
                "-q",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == ["a2.png", "a2_attention.png"]
    img = mpimg.imread(out / "plots" / "a2_attention.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0  # a real picture, not blank


def test_attention_that_cannot_be_placed_in_time_is_refused():
    times, mask = np.arange(10) / 100.0, np.ones(10, bool)
    with pytest.raises(ValueError, match="do not cover"):
        attention_positions(times, mask, 4, stride=2)  # 10 rows at stride 2 are 5 steps
    t, ok = attention_positions(times, np.r_[np.zeros(3, bool), np.ones(7, bool)], 4, stride=3)
    # steps cover rows 0-2 (all masked), 3-5, 6-8, 9: the mean time of their valid rows
    np.testing.assert_allclose(t[1:], [0.04, 0.07, 0.09])
    assert ok.tolist() == [False, True, True, True]


def test_grid_report_draws_attention_in_seconds(trained, tmp_path):
    """The ablation report's attention figures are the same drawing: the example clip's lines
    at the feature file's own times, padding absent."""
    from avemo.workflows.report import attention_chart, attention_from_run

    att = attention_from_run(trained["run"], n_clips=3)
    assert sorted(att) == ["a3"]  # the run's one validation clip (it has no test partition)
    entry = att["a3"]
    for m, stride in {"face": 1, "audio": math.prod(POOL_TIME)}.items():
        times, valid = attention_positions(
            *entry["timing"][m], len(entry["attention"][m]), entry["strides"][m]
        )
        want, _ = _expected(trained["files"][m], "a3", stride)
        np.testing.assert_allclose(times[valid], want, atol=2e-3)
    path = attention_chart(entry, "a3", tmp_path / "attention_a3.png")
    assert path.is_file() and path.stat().st_size > 1000
