"""The default detector's MTCNN fallback in the pipeline (issue 19): on real frames, MTCNN runs
on an empty key frame next to a face (and finds the face BlazeFace missed), skips faceless
frames except every ``fallback_every``-th, and, once it finds a face in a block, covers the
whole block, so the faces found are those of the old path (MTCNN on every empty key frame)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_faces_determinism import face_filling_clip

from avemo.extract.base import ClipInput
from avemo.extract.registry import DETECTORS, FEATURE_SETS
from avemo.extract.video.decode import read_all

pytestmark = pytest.mark.usefixtures("extract_one_thread")


@pytest.fixture(scope="module")
def det():
    return DETECTORS.build("blazeface_mtcnn", min_face_size=40)


@pytest.fixture
def mtcnn_saw(det, monkeypatch):
    """The frames (by identity) MTCNN is given from now on."""
    seen: list[np.ndarray] = []
    orig = det.fallback.detect

    def spy(frames, sizes=None):  # noqa: ANN001, ANN202
        seen.extend(frames)
        return orig(frames, sizes=sizes)

    monkeypatch.setattr(det.fallback, "detect", spy)
    return seen


@pytest.fixture(scope="module")
def frames(media, tmp_path_factory) -> dict[str, list[np.ndarray]]:
    _, wl = read_all(media("WolfgangLanger_Pexels.mp4"))
    _, cartoon = read_all(media("no_face.mp4"))
    _, man = read_all(media("single_face.mp4"))
    _, tight = read_all(face_filling_clip(media, tmp_path_factory.mktemp("tight") / "tight.mp4"))
    away = man[30].copy()
    away[:, 150:450] = cv2.resize(man[30][:, :150], (300, 360))  # the face cropped away
    return {
        # WolfgangLanger frame 95: her head turned, BlazeFace scores 0.65 and misses, MTCNN finds it
        "turned": [wl[90], wl[95], wl[100]],
        "faceless": [
            np.zeros_like(man[0]),
            away,
            *cartoon[::10][:6],  # (an upside-down face is no faceless frame: MTCNN finds it)
        ],
        "man": list(man[::10][:3]),
        "tight": list(tight[::5][:6]),
    }


def _index(seen: list[np.ndarray], block: list[np.ndarray]) -> list[int]:
    return sorted(next(i for i, f in enumerate(block) if f is s) for s in seen)


def test_a_face_blazeface_misses_next_to_faces_is_found(det, frames, mtcnn_saw) -> None:
    block = frames["turned"]
    assert [len(f) for f in det.primary.detect(block)] == [1, 0, 1]  # the premise
    out = det.detect_clip(block, first=1)  # key index 2 is not on the every-4th schedule
    assert [len(f) for f in out] == [1, 1, 1]
    assert _index(mtcnn_saw, block) == [1]


def test_faceless_frames_skip_mtcnn_except_next_to_faces_and_every_4th(
    det, frames, mtcnn_saw
) -> None:
    block = [
        *frames["man"][:2],
        *frames["faceless"],
        frames["man"][2],
    ]  # 2 faces, 8 faceless, 1 face
    assert [bool(len(f)) for f in det.primary.detect(block)] == [True] * 2 + [False] * 8 + [True]
    out = det.detect_clip(block, first=1)
    # next to a face: 2 and 9; on the schedule ((1 + i) % 4 == 0): 3 and 7
    assert _index(mtcnn_saw, block) == [2, 3, 7, 9]
    old = det.detect(block)  # the old path: MTCNN on all 8, finds nothing either
    assert [len(f) for f in out] == [len(f) for f in old] == [1, 1] + [0] * 8 + [1]
    mtcnn_saw.clear()
    assert not any(len(f) for f in det.detect_clip(frames["faceless"], first=1, face_before=True))
    assert _index(mtcnn_saw, frames["faceless"]) == [0, 3, 7]  # after a face; (1 + i) % 4 == 0
    with pytest.raises(ValueError, match="fallback_every"):
        DETECTORS.build("blazeface_mtcnn", fallback_every=0)


def test_a_face_only_mtcnn_sees_gets_the_whole_block(det, frames, mtcnn_saw) -> None:
    block = [*frames["faceless"][3:6], *frames["tight"]]  # cartoon, then a face filling the frame
    assert not any(len(f) for f in det.primary.detect(block))
    out = det.detect_clip(block, first=2)  # schedule: 2 and 6, then 6 finds the face
    assert [len(f) for f in out] == [0, 0, 0] + [1] * 6
    assert _index(mtcnn_saw, block) == list(range(9))  # the first round, then the rest
    old = det.detect(block)
    for a, b in zip(out, old, strict=True):  # MTCNN in other batches: float noise (~3e-5 px) only
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_pipeline_counts_and_masks_against_the_old_path(media, frames, tmp_path) -> None:
    from avemo.extract.video.decode import write_video

    tight = write_video(tmp_path / "tight.mp4", frames["tight"] * 4, fps=30)
    clips = [
        ClipInput("cartoon", str(media("no_face.mp4"))),
        ClipInput("man", str(media("single_face.mp4"))),
        ClipInput("mixed", str(media("face_noface.mov"))),
        ClipInput("tight", str(tight)),
    ]
    out = {}
    for every in (1, 4):
        # the detector on every key frame: the fallback schedule alone
        fs = FEATURE_SETS.build("face_fer2013", {"fallback_every": every, "stable_every": 1}, "cpu")
        fs.workers = 0
        assert fs.detector().fallback_every == every  # the config key reaches the detector
        out[every] = (
            {r.clip_id: r.mask for r in fs.extract(clips)},
            fs.detector().fallback_frames,
            fs.pipeline().times.key_frames,
        )
        fs.close()
    (old, n_old, keys), (new, n_new, _) = out[1], out[4]
    for c in clips:
        np.testing.assert_array_equal(old[c.clip_id], new[c.clip_id], err_msg=c.clip_id)
    assert not new["cartoon"].any() and new["man"].all() and new["tight"].all()
    assert n_new < 0.5 * n_old < keys  # the cartoon's 19 key frames: 5 (every 4th) instead of 19
