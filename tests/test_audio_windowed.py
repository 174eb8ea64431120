"""``logmel_resnet18``: Log-Mel windows on the face_r2plus1d window grid -> one-channel ResNet-18
(generated weights of the released shapes; the canonical file is not obtainable offline).
Real speech: EmoDB files (audio only: the fps grid) and CREMA-D takes (FLV: the video's own
frame times); rows are stamped at the window END frames of ``extract.window_grid``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from avemo.data.store import FeatureFile
from avemo.extract.runner import run_features
from avemo.extract.window_grid import window_ends


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A generated one-channel ResNet-18 state dict, and a 3-channel one (summed over RGB)."""
    from torch import nn
    from torchvision.models import resnet18

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("w")
    net = resnet18()  # RGB conv1 + fc, as torchvision's ImageNet file
    torch.save(net.state_dict(), out / "rgb.pth")
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    net.conv1.weight.data = torch.load(out / "rgb.pth", weights_only=True)["conv1.weight"].sum(
        1, keepdim=True
    )
    net.fc = nn.Identity()
    torch.save(net.state_dict(), out / "mono.pth")
    return out


def test_window_grid_ends():
    np.testing.assert_array_equal(window_ends(20, 8), [7, 15, 19])
    np.testing.assert_array_equal(window_ends(16, 8), [7, 15])
    np.testing.assert_array_equal(window_ends(3, 8), [2])
    assert len(window_ends(0, 8)) == 0


def test_emodb_files_fps_grid(shared_data, weights, tmp_path):
    labels = pd.read_csv(shared_data / "emodb-8spk" / "labels.csv", dtype=str).iloc[::80]  # 6 files
    df = pd.DataFrame(
        {
            "clip_id": labels["clip_id"].to_numpy(),
            "audio": [str(shared_data / "emodb-8spk" / f) for f in labels["file"]],
        }
    )
    cfg = {
        "logmel_resnet18": {"backbone_weights": str(weights / "mono.pth"), "hop": 8, "fps": 30.0}
    }
    path = run_features(df, ["logmel_resnet18"], tmp_path, overrides=cfg, progress=False)[
        "logmel_resnet18"
    ]
    with FeatureFile(path) as f:
        assert f.status_counts() == {"ok": len(df)} and f.row_shape == (512,)
        assert f.provenance["rate_hz"] == 30.0 / 8
        for cid in df["clip_id"]:
            c = f.clip(cid)
            n_frames = 60  # 2.0 s at 30 fps
            np.testing.assert_allclose(c.timestamps, window_ends(n_frames, 8) / 30.0, atol=1e-9)
            assert np.isfinite(c.values).all() and c.values.std() > 0
            assert not np.allclose(c.values[0], c.values[-1])  # windows see different audio


def test_rgb_weights_are_summed_to_one_channel(weights):
    from avemo.extract.audio.windowed import LogMelResNet18

    x = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    a = LogMelResNet18({"backbone_weights": str(weights / "rgb.pth")}).compute([x])[0]
    b = LogMelResNet18({"backbone_weights": str(weights / "mono.pth")}).compute([x])[0]
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_allclose(a[1], b[1])


def test_video_clips_use_their_own_frame_times(media, weights, tmp_path):
    """CREMA-D FLV takes (~30 fps video + mp3): window ends on the video's frames, the same
    rows face_r2plus1d stamps (window_ends over the video's frame times)."""
    from avemo.data.assets import cremad_1001
    from avemo.extract.audio.windowed import video_frame_times

    clips = cremad_1001()[:2]
    df = pd.DataFrame({"clip_id": [e for _, e in clips], "video": [str(p) for p, _ in clips]})
    cfg = {"logmel_resnet18": {"backbone_weights": str(weights / "mono.pth")}}
    path = run_features(df, ["logmel_resnet18"], tmp_path, overrides=cfg, progress=False)[
        "logmel_resnet18"
    ]
    with FeatureFile(path) as f:
        assert f.status_counts() == {"ok": 2}
        for p, e in clips:
            times = video_frame_times(p)
            assert times is not None and 20 < len(times) / (times[-1] - times[0] + 1e-9) < 40
            c = f.clip(e)
            np.testing.assert_allclose(c.timestamps, times[window_ends(len(times), 8)], atol=1e-6)
            assert np.isfinite(c.values).all()


def test_missing_weights_is_one_message(tmp_path):
    from avemo.errors import UserError
    from avemo.extract.audio.windowed import LogMelResNet18

    with pytest.raises(UserError, match="does not exist"):
        LogMelResNet18({"backbone_weights": str(tmp_path / "nope.pth")}).net()
