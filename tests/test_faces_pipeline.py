"""The face feature sets end to end on real media: statuses, masks, timestamps, runner, crops."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from avemo.data.store import FeatureFile, describe
from avemo.devices import DeviceFallbackWarning
from avemo.extract.base import ClipInput
from avemo.extract.registry import DETECTORS, FEATURE_SETS
from avemo.extract.video.align import align_faces
from avemo.extract.video.decode import write_video

pytestmark = pytest.mark.usefixtures("extract_one_thread")  # conftest: one thread, plugins loaded


@pytest.fixture(scope="module")
def fer(fer_inline):
    return fer_inline  # conftest: face_fer2013 decoding inline; the runner tests use workers


def _one(fs, path, clip_id="c"):
    out = list(fs.extract([ClipInput(clip_id, str(path))]))
    assert len(out) == 1
    return out[0]


def _transitions(mask):
    return int(np.count_nonzero(np.diff(mask.astype(int))))


def test_face_then_no_face(fer, media):
    r = _one(fer, media("face_noface.mov"))
    assert r.status == "ok" and r.values.shape == (len(r.mask), 128)
    assert r.mask[:60].all() and not r.mask[80:].any() and _transitions(r.mask) == 1
    assert np.all(np.diff(r.timestamps) > 0)
    missing = int((~r.mask).sum())
    assert f"{missing} of {len(r.mask)} frames without a face" in r.message
    assert np.all(r.values[~r.mask] == 0) and np.all(np.abs(r.values[r.mask]).sum(1) > 0)


def test_no_face_then_face(fer, media):
    r = _one(fer, media("noface_face.mov"))
    assert r.status == "ok"
    assert not r.mask[:90].any() and r.mask[105:160].all() and _transitions(r.mask) <= 2


def test_cartoon_without_faces_is_no_face(fer, media):
    r = _one(fer, media("no_face.mp4"))
    assert r.status == "no_face" and len(r.mask) > 50 and not r.mask.any()
    assert "no face" in r.message and np.all(np.diff(r.timestamps) > 0)


def test_bad_inputs_give_error_status_not_exceptions(fer, tmp_path, media):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 500)
    clips = [
        ClipInput("missing", str(tmp_path / "nope.mp4")),
        ClipInput("junk", str(junk)),
        ClipInput("novideo", None),
        ClipInput("good", str(media("single_face.mp4"))),
    ]
    out = {r.clip_id: r for r in fer.extract(clips)}
    assert set(out) == {"missing", "junk", "novideo", "good"}
    assert out["missing"].status == out["junk"].status == "error"
    assert out["novideo"].status == "no_video"  # no video in the manifest: a missing modality
    assert "does not exist" in out["missing"].message and "junk.mp4" in out["junk"].message
    assert out["good"].status == "ok" and out["good"].mask.all()


def test_runner_with_decode_workers_writes_a_checked_file(tmp_path, media, monkeypatch):
    from avemo.extract.runner import run_features

    monkeypatch.setenv("AVEMO_DECODE_WORKERS", "1")
    df = pd.DataFrame(
        {
            "clip_id": ["single", "cartoon", "broken"],
            "video": [
                str(media("single_face.mp4")),
                str(media("no_face.mp4")),
                str(tmp_path / "missing.mp4"),
            ],
        }
    )
    over = {"face_fer2013": {"logits": True, "fps": 10, "detect_every": 2}}
    paths = run_features(df, ["face_fer2013"], tmp_path / "feat", overrides=over, progress=False)
    with FeatureFile(paths["face_fer2013"]) as ff:
        assert ff.clip_ids == ["single", "cartoon", "broken"]
        assert ff.status == ["ok", "no_face", "missing"]  # the file the manifest names is not there
        assert ff.row_shape == (128 + 7,)
        assert ff.provenance["rate_hz"] == 10.0
        assert set(ff.provenance["weights"]) >= {"mtcnn_pnet", "fer2013_minixception"}
        clip = ff.clip("single")
        assert len(clip.values) == pytest.approx(24, abs=2)  # 2.4 s sampled at 10 Hz
        assert clip.mask.all() and np.all(np.diff(clip.timestamps) > 0.09)
        probs = torch.softmax(torch.from_numpy(clip.values[:, 128:]), 1)
        assert torch.allclose(probs.sum(1), torch.ones(len(probs)))
        # the class order travels with the logits: the fer package's own label order
        ref = json.loads((Path(__file__).parent / "fixtures" / "fer_reference.json").read_text())
        assert ff.logit_classes == ref["classes"]
    described = describe(paths["face_fer2013"])
    assert "classes in order: " + ", ".join(ref["classes"]) in described
    plain = run_features(
        df.iloc[:1],
        ["face_fer2013"],
        tmp_path / "plain",
        overrides={"face_fer2013": {"fps": 10, "detect_every": 2}},
        progress=False,
    )
    with FeatureFile(plain["face_fer2013"]) as ff:  # no logits in the rows: no class names either
        assert ff.row_shape == (128,) and ff.logit_classes is None
    assert "classes in order" not in describe(plain["face_fer2013"])


def test_multi_face_video_keeps_one_consistent_track(tmp_path, media):
    still = cv2.cvtColor(cv2.imread(str(media("multi_face.jpg"))), cv2.COLOR_BGR2RGB)
    frames = [np.roll(still, 3 * i, axis=1) for i in range(6)]  # a slow pan over five faces
    path = write_video(tmp_path / "group.mp4", frames, fps=10)
    # mtcnn: its boxes differ in size here, so which 3 are biggest is stable (BlazeFace's square
    # boxes of three faces are within 1 px, and the third place swaps between key frames)
    fs = FEATURE_SETS.build(
        "face_crops",
        {"detect_every": 2, "crop_size": 64, "align_margin": 0.25, "detector": "mtcnn"},
        "cpu",
    )
    fs.workers = 0
    r = _one(fs, path)
    assert r.status == "ok" and r.mask.all() and r.values.shape == (6, 64, 64, 3)
    assert "3 face tracks" in r.message  # five faces, the max_faces=3 biggest tracked
    # expected main face: the highest size x confidence one, aligned from the still itself
    faces = DETECTORS.build("mtcnn", min_face_size=40).detect(still[None])[0]
    w = faces.scores * np.sqrt(np.prod(faces.boxes[:, 2:] - faces.boxes[:, :2], 1))
    refs = align_faces([still], [0] * len(faces), faces.landmarks, 64, 0.25).astype(float)
    for crop in r.values.astype(float):
        dist = np.abs(refs - crop).mean((1, 2, 3))
        assert int(np.argmin(dist)) == int(np.argmax(w))  # the same face in every frame


def test_cuda_request_falls_back_to_cpu_with_notice():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.warns(DeviceFallbackWarning, match="face_crops: .*no CUDA GPU is visible"):
        fs = FEATURE_SETS.build("face_crops", {}, "cuda")
    assert fs.device == "cpu"


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match="detect_evry: unknown key, did you mean detect_every"):
        FEATURE_SETS.build("face_fer2013", {"detect_evry": 3}, "cpu")


def test_every_face_set_is_registered_with_explicit_thresholds():
    for name in (
        "face_fer2013",
        "face_resnet50",
        "face_arcface",
        "face_ir50",
        "face_vggface2",
        "face_hsemotion",
        "face_crops",
    ):
        cfg = FEATURE_SETS.get(name).default_config
        assert cfg["detector"] == "blazeface_mtcnn" and cfg["thresholds"] is None
        # None = the detector's defaults, resolved at construction so provenance has the numbers
        assert FEATURE_SETS.get(name).__init__ is FEATURE_SETS.get("face_fer2013").__init__
        assert {"fps", "detect_every", "min_face_size", "batch_frames"} <= set(cfg)


def test_fer_logits_follow_neutral_to_smile(media):
    """single_face.mp4 goes from a neutral face to a smile: the 7 logits must say so."""
    fs = FEATURE_SETS.build("face_fer2013", {"logits": True}, "cpu")
    fs.workers = 0
    r = _one(fs, media("single_face.mp4"))
    assert r.status == "ok" and r.mask.all() and r.values.shape[1] == 128 + 7
    top = r.values[:, 128:].argmax(
        1
    )  # FER2013 order: angry disgust fear happy sad surprise neutral
    assert np.mean(top[:10] == 6) >= 0.8 and np.mean(top[30:60] == 3) >= 0.8


class _RandomResNet18:
    """The agreed backbone interface around torchvision's resnet18 with random weights:
    112 px RGB crops, a margin, 512-d; exercises sizes/colours other than fer2013's 64 grey."""

    input_size, grayscale, align_margin, out_dim = 112, False, 0.1, 512

    def __init__(self, weights=None, device="cpu"):
        import torchvision

        torch.manual_seed(0)
        net = torchvision.models.resnet18(weights=None)
        net.fc = torch.nn.Identity()
        self.net = net.eval()

    def weights_info(self):
        return {"random_resnet18": "none"}

    @torch.inference_mode()
    def embed(self, crops):
        assert crops.dtype == torch.uint8 and tuple(crops.shape[1:]) == (112, 112, 3)
        x = crops.permute(0, 3, 1, 2).float().div(255).sub(0.5)
        return self.net(x.contiguous(memory_format=torch.channels_last)).float()


def test_any_registered_backbone_plugs_in(media):
    from avemo.extract.registry import BACKBONES

    if "test_random_resnet18" not in BACKBONES:
        BACKBONES.register("test_random_resnet18")(_RandomResNet18)
    fs = FEATURE_SETS.build("face_resnet50", {"backbone": "test_random_resnet18", "fps": 5}, "cpu")
    fs.workers = 0
    assert fs.weights()["random_resnet18"] == "none" and "mtcnn_onet" in fs.weights()
    r = _one(fs, media("single_face.mp4"))
    assert r.status == "ok" and r.values.shape == (len(r.mask), 512) and r.mask.all()
    assert np.isfinite(r.values).all() and r.values.std(0).mean() > 0


def _crashing_worker(tasks, events, **kw):
    """A decode worker whose FFmpeg 'crashes' (the process dies) on files named *crash*."""
    import os

    from avemo.extract.video.decode import decode_worker

    class Tap:
        def get(self, **timeout):
            job = tasks.get(**timeout)
            if job is not None and "crash" in str(job[1]):
                events.put(("start", job[0], os.getpid()))
                os._exit(3)
            return job

    decode_worker(Tap(), events, **kw)


def test_dead_decoder_process_fails_only_its_clip(tmp_path, media):
    fs = FEATURE_SETS.build("face_crops", {"fps": 5, "crop_size": 32}, "cpu")
    fs.workers = 1
    pipe = fs.pipeline()
    from avemo.extract.video.pipeline import DecodePool

    pipe._pool = DecodePool(1)
    pipe._pool.target = _crashing_worker
    clips = [
        ClipInput("crash", str(tmp_path / "crash.mp4")),
        ClipInput("good", str(media("single_face.mp4"))),
    ]
    out = {r.clip_id: r for r in fs.extract(clips)}
    assert (
        out["crash"].status == "error"
        and "decoder process died (exit code 3)" in out["crash"].message
    )
    assert out["good"].status == "ok" and out["good"].mask.all()
    fs.close()
