"""Decoding: container timestamps (VFR), fps sampling, rotation metadata, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from avemo.extract.video.decode import (
    DecodeError,
    display_rotation,
    iter_frames,
    read_all,
    write_video,
)


@pytest.mark.parametrize("name", ["single_face.mp4", "noface_face.mov"])
def test_real_video_timestamps_strictly_increase(media, name):
    times, frames = read_all(media(name))
    assert len(times) == len(frames) > 50
    assert times[0] == pytest.approx(0.0, abs=1e-3)
    assert np.all(np.diff(times) > 0)
    assert frames.dtype == np.uint8 and frames.shape[-1] == 3


def test_chunks_are_bounded_and_consecutive(media):
    chunks = list(iter_frames(media("single_face.mp4"), chunk=10))
    assert all(len(c) <= 10 for c in chunks)
    idx = np.concatenate([c.index for c in chunks])
    assert np.array_equal(idx, np.arange(len(idx)))


def test_variable_frame_rate_keeps_container_times(tmp_path):
    img = np.full((48, 64, 3), 90, np.uint8)
    want = [0.0, 0.1, 0.35, 0.4, 1.0, 1.05]
    path = write_video(tmp_path / "vfr.mp4", [img] * len(want), fps=10, times=want)
    times, _ = read_all(path)
    np.testing.assert_allclose(times, want, atol=2e-3)
    # 4 Hz sampling follows timestamps, not frame counts: instants 0, .25, .5, .75, 1.0
    sampled, _ = read_all(path, fps=4)
    np.testing.assert_allclose(sampled, [0.0, 0.35, 1.0], atol=2e-3)


def test_fps_sampling_on_real_video(media):
    full, _ = read_all(media("single_face.mp4"))
    sampled, _ = read_all(media("single_face.mp4"), fps=10)
    assert len(sampled) == pytest.approx(len(full) / 3, abs=2)  # 30 fps source
    assert np.all(np.diff(sampled) > 0.09)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_matrix_rotation_is_applied(tmp_path, rotation):
    upright = np.zeros((48, 80, 3), np.uint8)
    upright[:12, :12, 0] = 255  # red block top-left as the viewer should see it
    # store the picture turned the other way; the display matrix turns it back
    stored = np.ascontiguousarray(np.rot90(upright, -display_rotation(rotation)))
    path = write_video(tmp_path / "rot.mp4", [stored] * 3, fps=10, rotation=rotation)
    _, frames = read_all(path)
    assert frames.shape[1:3] == upright.shape[:2]
    red = np.argwhere(frames[0, :, :, 0] > 128).mean(0)
    assert red[0] < 12 and red[1] < 12


def test_phone_style_rotated_astronaut_is_upright(tmp_path):
    astro = skimage.data.astronaut()
    stored = np.ascontiguousarray(np.rot90(astro, 1))  # lying on its side, as a phone stores it
    path = write_video(tmp_path / "phone.mp4", [stored] * 2, fps=5, rotation=-90)
    _, frames = read_all(path)
    assert frames.shape[1:3] == astro.shape[:2]
    err = np.abs(frames[0].astype(int) - astro.astype(int)).mean()
    assert err < 12  # same picture up to compression


def test_missing_and_undecodable_files_raise_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="does not exist"):
        list(iter_frames(tmp_path / "nope.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(DecodeError, match="junk.mp4"):
        list(iter_frames(junk))
