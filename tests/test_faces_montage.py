"""``avemo inspect FILE --montage CLIP -o out.png``: a real PNG of the crops stage one used."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from avemo.cli import main
from avemo.data.store import ClipFeatures, write_clips
from avemo.extract.base import ClipInput
from avemo.extract.registry import FEATURE_SETS, load_all
from avemo.extract.video.decode import iter_frames, write_video
from avemo.extract.video.montage import PALETTE, render


@pytest.fixture(scope="module")
def crops_file(tmp_path_factory, media):
    """face_crops of a real face that leaves the frame and comes back elsewhere."""
    torch.set_num_threads(1)
    load_all()
    tmp = tmp_path_factory.mktemp("montage")
    src = [f for ch in iter_frames(media("single_face.mp4")) for f in ch.frames][::2][:20]
    bg = np.full_like(src[0], 100)
    small = [cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA) for f in src]

    def at(img, x, y):
        out = bg.copy()
        out[y : y + 180, x : x + 320] = img
        return out

    frames = (
        [at(small[i], 10, 20) for i in range(10)]
        + [bg] * 8
        + [at(small[10 + i], 300, 170) for i in range(10)]
    )
    video = write_video(tmp / "clip.mp4", frames, fps=25)
    fs = FEATURE_SETS.build("face_crops", {"crop_size": 64}, "cpu")
    fs.workers = 0
    (clip,) = list(fs.extract([ClipInput("clip", str(video))]))
    fs.close()
    assert clip.status == "ok" and clip.info["tracks"] >= 2
    return write_clips(tmp / "face_crops.h5", [clip], fs.provenance()), clip


def test_montage_writes_a_real_png(crops_file, tmp_path, capsys):
    path, clip = crops_file
    out = tmp_path / "clip.png"
    assert main(["inspect", str(path), "--montage", "clip", "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)  # decodes: a real PNG
    assert img is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expect = render(clip)
    assert img.shape == expect.shape and img.shape[0] > 150 and img.shape[1] > 400
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    assert rgb.std() > 20  # not a constant picture
    np.testing.assert_array_equal(rgb, expect)  # lossless: exactly what render drew
    # the subject's tracks are drawn in their colours, the gap as "no face" tiles
    tracks = {t for t, _, _ in clip.info["track_runs"]}
    for t in tracks:
        assert (rgb.reshape(-1, 3) == PALETTE[t % len(PALETTE)]).all(1).sum() > 100
    assert (rgb.reshape(-1, 3) == (40, 40, 40)).all(1).sum() > 500


def test_montage_tiles_hold_the_crops(crops_file):
    _, clip = crops_file
    one = ClipFeatures("x", clip.values[:1], clip.timestamps[:1], clip.mask[:1], info={})
    img = render(one, tile=70)  # the tile is the crop resized to 64: compare the inner part
    tile = img[46 + 3 : 46 + 67, 4 + 3 : 4 + 67]
    np.testing.assert_array_equal(tile, clip.values[0])


def test_montage_mistakes_exit_2_and_write_nothing(crops_file, tmp_path, capsys):
    path, clip = crops_file
    out = tmp_path / "x.png"
    assert main(["inspect", str(path), "--montage", "nope", "-o", str(out)]) == 2
    assert "no such clip" in capsys.readouterr().err and not out.exists()
    assert main(["inspect", str(path), "--montage", "clip"]) == 2
    assert "-o OUT.png" in capsys.readouterr().err
    emb = ClipFeatures("clip", np.ones((3, 8), np.float32), np.arange(3) / 25, np.ones(3, bool))
    p2 = write_clips(tmp_path / "emb.h5", [emb], {"feature_set": "face_fer2013", "config": {}})
    assert main(["inspect", str(p2), "--montage", "clip", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "face_crops" in err and "Traceback" not in err and not out.exists()
