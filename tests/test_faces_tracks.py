"""Track linking, filling between key frames, and main-face choice (synthetic detections)."""

from __future__ import annotations

import numpy as np
import pytest

from avemo.extract.video.detectors.base import Faces
from avemo.extract.video.tracks import Tracker, iou


def _faces(*boxes_scores):
    boxes = np.array([b for b, _ in boxes_scores], np.float32).reshape(-1, 4)
    scores = np.array([s for _, s in boxes_scores], np.float32)
    # landmarks: the box corners' mean plus fixed offsets, enough to follow interpolation
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    lmk = c[:, None, :] + np.arange(10, dtype=np.float32).reshape(1, 5, 2)
    return Faces(boxes, scores, lmk)


def test_iou_basics():
    a = np.array([[0, 0, 10, 10]])
    assert iou(a, a)[0, 0] == pytest.approx(1.0)
    assert iou(a, np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(50 / 150)
    assert iou(a, np.array([[20, 20, 30, 30]]))[0, 0] == 0


def test_two_faces_keep_their_tracks_and_the_bigger_one_wins():
    tr = Tracker()
    for f in range(0, 50, 5):
        small = ([10 + f, 10, 50 + f, 50], 0.99)  # moves right, 40 px
        big = ([200, 100 - f, 300, 200 - f], 0.95)  # moves up, 100 px
        tr.update(f, _faces(big, small) if f % 10 else _faces(small, big))  # order varies
    assert len(tr.tracks) == 2
    main = tr.main_track()
    assert all(b[2] - b[0] == pytest.approx(100) for b in tr.tracks[main].boxes)
    assert len(tr.tracks[main].frames) == 10


def test_long_consistent_track_beats_a_brief_bigger_face():
    tr = Tracker()
    for f in range(20):
        faces = [([10, 10, 70, 70], 0.99)]
        if f == 7:
            faces.append(([200, 10, 300, 110], 0.99))
        tr.update(f, _faces(*faces))
    assert len(tr.tracks[tr.main_track()].frames) == 20


def test_fast_motion_links_by_centre_distance():
    tr = Tracker(link_iou=0.5, link_centre=0.5)
    tr.update(0, _faces(([0, 0, 100, 100], 0.9)))
    tr.update(10, _faces(([40, 0, 140, 100], 0.9)))  # IoU 0.43 < 0.5, centre 0.4 box away: linked
    tr.update(20, _faces(([100, 0, 200, 100], 0.9)))  # centre 0.6 box away: a new track
    assert [len(t.frames) for t in tr.tracks.values()] == [2, 1]


def test_fill_interpolates_between_key_frames_and_holds_at_edges():
    tr = Tracker()
    tr.update(0, _faces(([0, 0, 40, 40], 0.9)))
    tr.update(4, _faces(([8, 0, 48, 40], 0.7)))
    tr.update(8, Faces.none())
    obs = tr.fill(0, 9)
    assert sorted(obs) == list(range(9))
    np.testing.assert_allclose(obs[2][0].box, [4, 0, 44, 40])
    np.testing.assert_allclose(obs[1][0].landmarks[0], [22 + 0, 20 + 1])
    assert obs[2][0].score == pytest.approx(0.8)
    # between a seen and an unseen key frame: the nearer key frame decides
    assert len(obs[5]) == 1 and len(obs[6]) == 1 and len(obs[7]) == 0 and len(obs[8]) == 0


def test_max_faces_and_min_size_filter_detections():
    tr = Tracker(max_faces=2, min_face_size=20)
    tr.update(
        0,
        _faces(
            ([0, 0, 10, 10], 0.99),
            ([0, 0, 60, 60], 0.9),
            ([100, 0, 130, 30], 0.9),
            ([200, 0, 280, 80], 0.9),
        ),
    )
    sizes = sorted(t.boxes[0][2] - t.boxes[0][0] for t in tr.tracks.values())
    assert sizes == [60, 80]


def test_key_frames_must_increase():
    tr = Tracker()
    tr.update(3, Faces.none())
    with pytest.raises(ValueError, match="increase"):
        tr.update(3, Faces.none())


def test_live_sizes_forget_lost_tracks():
    tr = Tracker(max_gap=1)
    tr.update(0, _faces(([0, 0, 40, 50], 0.9)))
    assert tr.live_sizes() == [50.0]
    tr.update(5, Faces.none())
    assert tr.live_sizes() == [50.0]  # one key frame missed: still linkable
    tr.update(10, Faces.none())
    assert tr.live_sizes() == []


def test_fill_follows_timestamps_for_variable_frame_rate():
    tr = Tracker()
    tr.update(0, _faces(([0, 0, 40, 40], 0.9)))
    tr.update(2, _faces(([12, 0, 52, 40], 0.9)))
    times = [0.0, 0.25, 1.0]  # frame 1 is a quarter of the way in time, not half
    np.testing.assert_allclose(tr.fill(0, 3, times)[1][0].box, [3, 0, 43, 40])
    np.testing.assert_allclose(tr.fill(0, 3)[1][0].box, [6, 0, 46, 40])


def test_key_frame_queries_name_each_track_detection():
    """``is_key`` / ``detections_at``: what the pipeline asks the tracker (identity chips, the
    last key frame), without reaching into its private tables."""
    tr = Tracker()
    tr.update(0, _faces(([10, 10, 50, 50], 0.99), ([200, 100, 300, 200], 0.95)))
    tr.update(5, _faces(([12, 10, 52, 50], 0.99)))
    tr.update(10, _faces())
    assert tr.is_key(5) and not tr.is_key(3)
    at0, at5 = tr.detections_at(0), tr.detections_at(5)
    assert len(at0) == 2 and len(at5) == 1 and tr.detections_at(10) == {} == tr.detections_at(3)
    ((tid, i),) = at5.items()
    assert tid in at0 and tr.tracks[tid].frames[i] == 5  # the same face, its second detection
    at5[tid] = 99
    assert tr.detections_at(5)[tid] == i, "a copy: callers cannot change the tracker"
