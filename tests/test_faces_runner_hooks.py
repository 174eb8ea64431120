"""Runner hooks as the face sets use them (measured in README "Runner hooks"): face sets stream
all clips through one extract call; no feature set asks for compressed storage, so face crops
stay memory-mappable."""

from __future__ import annotations

import numpy as np
import pandas as pd

from avemo.data.store import FeatureFile
from avemo.extract.registry import FEATURE_SETS
from avemo.extract.runner import run_features
from avemo.extract.video.decode import write_video


def test_face_sets_stream_every_clip_in_one_call_and_store_mmappable_crops(
    tmp_path, monkeypatch, media, extract_one_thread, extract_calls
):
    import skimage.data

    face = skimage.data.astronaut()[0:300, 100:380][::2, ::2]
    rows = []
    for i in range(3):
        frames = [np.full((240, 320, 3), 40 * i, np.uint8) for _ in range(12)]
        for f in frames:
            f[40:190, 80:220] = face
        rows.append(
            {"clip_id": f"c{i}", "video": str(write_video(tmp_path / f"c{i}.mp4", frames, fps=12))}
        )
    cls = FEATURE_SETS.get("face_crops")
    assert all(
        getattr(FEATURE_SETS.get(n), "streams_clips", False)
        for n in FEATURE_SETS.names()
        if n.startswith("face_")
    )
    calls = extract_calls(cls)
    monkeypatch.setenv("AVEMO_DECODE_WORKERS", "1")
    path = run_features(
        pd.DataFrame(rows),
        ["face_crops"],
        tmp_path / "out",
        batch_clips=1,
        progress=False,
        overrides={"face_crops": {"crop_size": 32}},
    )["face_crops"]
    assert calls == [3]  # one call for all clips despite batch_clips=1
    with FeatureFile(path, mmap=True) as ff:
        assert ff.is_mmapped  # contiguous: no feature set asks for compression
        for cid in ("c0", "c1", "c2"):
            r = ff.clip(cid)
            assert r.status == "ok" and r.mask.all() and r.values.shape == (12, 32, 32, 3)
