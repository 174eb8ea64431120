"""face_r2plus1d: one R(2+1)D-18 vector per (clip, window end) with window-end time stamps and
masks, on generated clips (known face presence) and real footage, with generated weights of the
real architecture (a randomly initialised torchvision r2plus1d_18 state dict, loaded with
``torch.load(weights_only=True)``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.video import r2plus1d_18

from avemo.extract.base import ClipInput
from avemo.extract.registry import CLIP_BACKBONES, FEATURE_SETS, load_all
from avemo.extract.video.decode import write_video
from avemo.extract.video.windowed import fill_absent, sample_frames, window_ends
from avemo.extract.weights import MissingWeightsError
from avemo.fusion.spec import TaskSpec


@pytest.fixture(scope="module", autouse=True)
def setup_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    load_all()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "r2plus1d_18_random.pth"
    torch.save(r2plus1d_18().state_dict(), path)
    return path


def _face_clip(tmp_path, n=96, face_until=64, fps=25):
    """640x360 clip: the astronaut's face in frames < ``face_until``, then an empty scene."""
    import cv2
    import skimage.data

    face = cv2.resize(skimage.data.astronaut()[0:300, 100:380], (160, 172))
    frames = []
    for i in range(n):
        f = np.full((360, 640, 3), 60, np.uint8)
        if i < face_until:
            x = 200 + i  # moving slowly to the right
            f[80:252, x : x + 160] = face
        frames.append(f)
    return write_video(tmp_path / "gen.mp4", frames, fps=fps)


def test_window_ends_and_sampling_hand_cases():
    assert window_ends(0, 8).tolist() == []
    assert window_ends(5, 8).tolist() == [4]
    assert window_ends(16, 8).tolist() == [7, 15]
    assert window_ends(20, 8).tolist() == [7, 15, 19]
    idx = sample_frames(np.array([7, 40]), window=32, frames=8)
    assert idx.tolist() == [[0, 0, 0, 0, 0, 0, 3, 7], [12, 16, 20, 24, 28, 32, 36, 40]]
    present = np.array([[True] * 6 + [False, False]])
    filled = fill_absent(np.array([[12, 16, 20, 24, 28, 32, 36, 40]]), present)
    assert filled.tolist() == [[12, 16, 20, 24, 28, 32, 32, 32]]  # nearest present sampled frame


def test_generated_clip_shapes_timestamps_and_masks(tmp_path, weights):
    path = _face_clip(tmp_path)
    fs = FEATURE_SETS.build(
        "face_r2plus1d",
        {"backbone_weights": str(weights), "detect_every": 1, "crop_size": 64, "hop": 8},
        "cpu",
    )
    fs.workers = 0
    (r,) = fs.extract([ClipInput("gen", str(path))])
    fs.close()
    ends = np.arange(7, 96, 8)
    assert r.values.shape == (len(ends), 512) and r.values.dtype == np.float32
    np.testing.assert_allclose(r.timestamps, ends / 25.0, atol=1e-6)  # window END frame times
    # ground truth: the face is in frames < 64; a window is valid when >= half its 8 samples have it
    truth = (sample_frames(ends, 32, 8) < 64).mean(1) >= 0.5
    assert r.mask.tolist() == truth.tolist()
    assert (
        r.status == "ok"
        and f"{int((~truth).sum())} of {len(ends)} windows without the face" in r.message
    )
    assert np.all(r.values[~r.mask] == 0) and np.all(np.abs(r.values[r.mask]).sum(1) > 0)
    assert not np.allclose(r.values[r.mask][0], r.values[r.mask][-1])  # the face moved
    assert (
        r.info["frames"] == 96 and r.info["subject_frames"] >= 60
    )  # the per-frame subject's facts
    prov = fs.provenance()
    assert prov["config"]["window"] == 32 and prov["config"]["frames"] == 8
    assert "r2plus1d_18_user" in prov["weights"]


def test_windows_are_the_cnn_of_the_sampled_crops(tmp_path, weights):
    """The row of a window equals R(2+1)D-18 run by hand on face_crops' crops of its frames."""
    path = _face_clip(tmp_path, n=40, face_until=40)
    over = {"detect_every": 1, "crop_size": 64}
    crops_fs = FEATURE_SETS.build("face_crops", over, "cpu")
    crops_fs.workers = 0
    (crops,) = crops_fs.extract([ClipInput("c", str(path))])
    fs = FEATURE_SETS.build(
        "face_r2plus1d", {**over, "backbone_weights": str(weights), "hop": 16}, "cpu"
    )
    fs.workers = 0
    (r,) = fs.extract([ClipInput("c", str(path))])
    assert r.mask.all() and len(r.values) == 3  # ends 15, 31, 39
    net = r2plus1d_18()
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.fc = torch.nn.Identity()
    x = torch.from_numpy(crops.values[sample_frames(np.array([31]), 32, 8)[0]]).float() / 255
    x = x.permute(3, 0, 1, 2)[None]
    mean = torch.tensor([0.43216, 0.394666, 0.37645]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.22803, 0.22145, 0.216989]).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        want = net.eval()((x - mean) / std)[0].numpy()
    np.testing.assert_allclose(r.values[1], want, rtol=1e-4, atol=1e-4)


def test_real_footage_every_window_has_the_subject(shared_data, weights):
    video = sorted((shared_data / "ravdess-a05" / "video").glob("02-*.mp4"))[0]
    fs = FEATURE_SETS.build(
        "face_r2plus1d", {"backbone_weights": str(weights), "hop": 16, "crop_size": 64}, "cpu"
    )
    fs.workers = 0
    (r,) = fs.extract([ClipInput(video.stem, str(video))])
    fs.close()
    n = int(round(r.timestamps[-1] * 30000 / 1001)) + 1  # 29.97 fps: frames up to the last end
    assert len(r.values) == len(window_ends(n, 16))
    assert r.status == "ok" and r.mask.all()
    assert np.all(np.diff(r.timestamps) > 0) and np.allclose(
        np.diff(r.timestamps)[:-1], 16 * 1001 / 30000, atol=2e-3
    )
    assert r.values.std(0).mean() > 0  # rows differ over time


def test_fine_tuned_checkpoint_with_another_head_loads(tmp_path):
    net = r2plus1d_18(num_classes=7)  # e.g. fine-tuned on 7 emotions
    path = tmp_path / "ft.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    bb = CLIP_BACKBONES.build("r2plus1d_18", weights=str(path))
    clip = np.random.default_rng(0).integers(0, 255, (2, 8, 32, 32, 3), dtype=np.uint8)
    out = bb.embed(clip)
    assert out.shape == (2, 512) and np.isfinite(out).all()
    assert list(bb.weights_info()) == ["r2plus1d_18_user"]


def test_wrong_checkpoint_and_missing_weights_say_what_to_do(tmp_path, monkeypatch):
    bad = tmp_path / "bad.pt"
    sd = r2plus1d_18().state_dict()
    del sd["stem.0.weight"]
    torch.save(sd, bad)
    with pytest.raises(Exception, match="stem.0.weight"):
        CLIP_BACKBONES.build("r2plus1d_18", weights=str(bad))
    monkeypatch.setenv("AVEMO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("AVEMO_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(MissingWeightsError, match="r2plus1d_18-91a641e6.pth"):
        CLIP_BACKBONES.build("r2plus1d_18")


def test_bad_window_config_is_refused():
    with pytest.raises(ValueError, match="frames"):
        FEATURE_SETS.build("face_r2plus1d", {"frames": 40}, "cpu")
    with pytest.raises(ValueError, match="hop"):
        FEATURE_SETS.build("face_r2plus1d", {"hop": 0}, "cpu")


def test_jca_config_reads_the_windowed_file_without_glue(tmp_path, weights):
    """workflows/configs/jca.yaml, paths pointed at a face_r2plus1d file written by the runner:
    the datamodule maps window-end rows onto per-frame labels by time, masks follow the windows,
    and the JCA model runs on the batch."""
    from pathlib import Path

    import pandas as pd

    from avemo.data.store import ClipFeatures, FeatureFile, make_provenance, write_clips
    from avemo.extract.runner import run_features
    from avemo.fusion import registry
    from avemo.fusion.config import load_config
    from avemo.fusion.datamodule import CachedFeatureDataModule

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    clips = {
        "a": _face_clip(tmp_path / "a", face_until=64),
        "b": _face_clip(tmp_path / "b", face_until=96),
    }
    rng = np.random.default_rng(0)
    rows, audio = [], []
    (tmp_path / "ann").mkdir()
    for i, (cid, path) in enumerate(clips.items()):
        t = np.arange(96) / 25.0
        ann = tmp_path / "ann" / f"{cid}.csv"
        pd.DataFrame(
            {"time": t, "valence": rng.uniform(-1, 1, 96), "arousal": rng.uniform(-1, 1, 96)}
        ).to_csv(ann, index=False)
        rows.append(
            {
                "clip_id": cid,
                "video": str(path),
                "split": ["train", "test"][i],
                "subject": f"s{i}",
                "annotation": str(ann),
            }
        )
        audio.append(
            ClipFeatures(cid, rng.normal(size=(96, 512)).astype(np.float32), t, np.ones(96, bool))
        )
    man = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(man, index=False)
    face = run_features(
        man,
        ["face_r2plus1d"],
        tmp_path / "features",
        progress=False,
        overrides={
            "face_r2plus1d": {"backbone_weights": str(weights), "detect_every": 1, "crop_size": 64}
        },
    )["face_r2plus1d"]
    au = write_clips(tmp_path / "audio.h5", audio, make_provenance("audio_t", {}, {}, 25.0))
    jca = Path(__file__).resolve().parents[1] / "workflows" / "configs" / "jca.yaml"
    assert "face_r2plus1d.h5" in load_config(jca).data.features["face"]
    cfg = load_config(
        jca,
        [
            f"data.manifest={man}",
            f"data.features.face={face}",
            f"data.features.audio={au}",
            "data.window.length=96",
            "data.window.hop=96",
            "data.normalize=false",
            "model.seq_len=4",
        ],
    )
    dm = CachedFeatureDataModule(cfg, "cpu")
    dm.setup()
    b = dm.gather(torch.arange(2))
    assert b["face"].shape == (2, 96, 512)
    with FeatureFile(face) as ff:
        for k, cid in enumerate(dm.tables.clip_ids):
            win = ff.clip(cid)
            lab_t = np.arange(96) / 25.0
            # the datamodule's rule: the nearest VALID window end, if within 1.5 row spacings
            ok = np.flatnonzero(win.mask)
            dist = np.abs(win.timestamps[ok][None] - lab_t[:, None])
            near = ok[dist.argmin(1)]
            limit = 1.5 * np.median(np.diff(win.timestamps))
            want_mask = dist.min(1) <= limit
            got_mask = b["face_mask"][k].numpy()
            clear = np.abs(dist.min(1) - limit) > 1e-6  # frames exactly at the limit: float ties
            assert got_mask[clear].tolist() == want_mask[clear].tolist() and clear.mean() > 0.9
            np.testing.assert_allclose(
                b["face"][k].numpy()[got_mask], win.values[near][got_mask], rtol=1e-6
            )
    assert (
        not b["face_mask"][0].all() and b["face_mask"][1].all()
    )  # clip a loses its face at frame 64
    registry.load_all()
    task = TaskSpec("frame", 2)
    kwargs = cfg.model.options()
    model = registry.MODELS.build(
        "jca", inputs={"face": (512,), "audio": (512,)}, task=task, **kwargs
    )
    out = model(b)
    assert out.shape == (2, 96, 2) and torch.isfinite(out).all()
