"""Datamodule over real HDF5 feature files: provenance refusal, clip checks, statistics, gathers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fusion_data import clip_config, clip_corpus, frame_corpus

from avemo.data.store import ConfigMismatchError, FeatureFile
from avemo.fusion.config import ConfigError, load_config
from avemo.fusion.datamodule import (
    CachedFeatureDataModule,
    load_features,
    overlap_average,
    window_starts,
)


def _dm(cfg: dict, cache: dict | None = None) -> CachedFeatureDataModule:
    dm = CachedFeatureDataModule(load_config(cfg), "cpu", feature_cache=cache)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clip")
    return tmp, clip_corpus(tmp)


def test_provenance_mismatch_is_refused_with_the_differing_key(corpus):
    tmp, c = corpus
    cfg = clip_config(c, tmp, data={"expect": {"face": {"config": {"dim": 8, "rate": 30.0}}}})
    with pytest.raises(ConfigMismatchError) as e:
        _dm(cfg)
    assert "config.rate" in str(e.value) and "30.0" in str(e.value)
    assert "config.dim" not in str(e.value)  # matching keys are not listed
    cfg = clip_config(c, tmp, data={"expect": {"audio": {"config_hash": "0123456789abcdef"}}})
    with pytest.raises(ConfigMismatchError, match="config_hash"):
        _dm(cfg)
    with FeatureFile(c["face"]) as ff:  # the true provenance is accepted
        good = {"feature_set": "face_test", "config_hash": ff.provenance["config_hash"]}
    assert _dm(clip_config(c, tmp, data={"expect": {"face": good}})).spec.n_out == 3


def test_missing_clips_are_reported_or_skipped(tmp_path):
    c = clip_corpus(tmp_path)
    import pandas as pd

    man = pd.read_csv(c["manifest"])
    extra = man.iloc[:2].assign(clip_id=["ghost1", "ghost2"])
    pd.concat([man, extra]).to_csv(c["manifest"], index=False)
    with pytest.raises(ConfigError) as e:
        _dm(clip_config(c, tmp_path))
    assert "2 manifest clip(s) are missing" in str(e.value) and "ghost1" in str(e.value)
    dm = _dm(clip_config(c, tmp_path, data={"missing_clips": "skip"}))
    assert len(dm.manifest) == len(man) and any("ghost2" in n for n in dm.notes)


def test_non_ok_clips_skipped_or_kept_masked(tmp_path):
    c = clip_corpus(tmp_path, bad={"c000": "no_face", "c007": "no_face"})
    dm = _dm(clip_config(c, tmp_path))
    assert "c000" not in dm.pos and any(
        "skipped 2 clip(s)" in n and "face:no_face=2" in n for n in dm.notes
    )
    dm = _dm(clip_config(c, tmp_path, data={"non_ok": "keep"}))
    i = dm.pos["c000"]
    b = dm.gather(torch.tensor([i, dm.pos["c001"]]))
    assert not b["face_mask"][0].any() and b["face_mask"][1].any()
    assert b["audio_mask"][0].any()  # the other modality of the clip is still used
    assert torch.all(b["face"][0] == 0)


def test_a_missing_modality_is_masked_not_skipped(tmp_path):
    """no_video / no_audio mean the clip has no such media: the clip trains on what it has."""
    c = clip_corpus(tmp_path, bad={"c000": "no_video", "c001": "no_audio", "c002": "no_face"})
    dm = _dm(clip_config(c, tmp_path))
    assert "c000" in dm.pos and "c001" in dm.pos and "c002" not in dm.pos  # no_face: still skipped
    assert dm.status_counts == {"face:no_video": 1, "audio:no_audio": 1, "face:no_face": 1}
    assert any("2 clip(s) lack a modality" in n and "face:no_video=1" in n for n in dm.notes)
    assert any("skipped 1 clip(s) whose status is not ok (face:no_face=1)" in n for n in dm.notes)
    b = dm.gather(torch.tensor([dm.pos["c000"], dm.pos["c001"], dm.pos["c003"]]))
    assert not b["face_mask"][0].any() and b["audio_mask"][0].any()
    assert b["face_mask"][1].any() and not b["audio_mask"][1].any()
    assert b["face_mask"][2].any() and b["audio_mask"][2].any()
    assert torch.all(b["face"][0] == 0) and torch.all(b["audio"][1] == 0)
    # a face-only run has nothing for the clip without video: that clip alone is dropped
    face_only = clip_config(c, tmp_path)
    face_only["data"]["features"] = {"face": str(c["face"])}
    dm = _dm(face_only)
    assert "c000" not in dm.pos and "c001" in dm.pos
    assert any("1 with no modality skipped" in n for n in dm.notes)


def test_normalisation_uses_training_rows_only(corpus):
    tmp, c = corpus
    dm = _dm(clip_config(c, tmp))
    train = set(dm.splits["partitions"]["train"])
    rows = []
    with FeatureFile(c["face"]) as ff:
        for cid in ff.clip_ids:
            cf = ff.clip(cid)
            if cid in train:
                rows.append(cf.values[cf.mask])
    rows = np.concatenate(rows).astype(np.float64)
    mean, inv_std = dm.stats["face"]
    np.testing.assert_allclose(mean.numpy(), rows.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(1 / inv_std.numpy(), rows.std(0), rtol=1e-4)
    # statistics over every clip differ: val/test rows must not leak into them
    with FeatureFile(c["face"]) as ff:
        ra = ff.load_all()
    all_mean = ra.values[ra.mask].mean(0)
    assert not np.allclose(all_mean, mean.numpy(), atol=1e-4)
    # normalised training batch: zero mean / unit std over valid rows
    b = dm.gather(dm.part_seqs["train"])
    x = b["face"][b["face_mask"]].double()
    np.testing.assert_allclose(x.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(0, unbiased=False).numpy(), 1, atol=1e-3)


def test_gather_pads_and_masks_exact_rows(corpus):
    tmp, c = corpus
    dm = _dm(clip_config(c, tmp, data={"normalize": False}))
    ids = ["c003", "c011", "c020"]
    b = dm.gather(torch.tensor([dm.pos[i] for i in ids]))
    with FeatureFile(c["face"]) as ff:
        clips = [ff.clip(i) for i in ids]
    T = max(len(cf.values) for cf in clips)
    assert b["face"].shape == (3, T, 8)
    for k, cf in enumerate(clips):
        n = len(cf.values)
        np.testing.assert_array_equal(b["face_mask"][k, :n].numpy(), cf.mask)
        assert not b["face_mask"][k, n:].any()
        np.testing.assert_allclose(b["face"][k, :n][cf.mask].numpy(), cf.values[cf.mask])
        assert torch.all(b["face"][k][~b["face_mask"][k]] == 0)
    assert b["y"].tolist() == [0, 2, 2]


def test_feature_cache_shares_device_tensors(corpus):
    tmp, c = corpus
    cache: dict = {}
    a = load_features(c["face"], "cpu", cache)
    dm = _dm(clip_config(c, tmp), cache)
    assert dm.arrays["face"] is a and len(cache) == 2


def test_window_starts_hand_cases():
    assert window_starts(100, 300, 200) == [0]  # short clip: one padded window
    assert window_starts(300, 300, 200) == [0]
    assert window_starts(500, 300, 200) == [0, 200]  # 200 + 300 == 500: already at the end
    assert window_starts(650, 300, 200) == [0, 200, 350]  # last aligned to the end
    assert window_starts(10, 4, 3) == [0, 3, 6]


def test_overlap_average_hand_case():
    preds = [np.full(4, 1.0), np.full(4, 3.0), np.full(4, 5.0)]
    out = overlap_average(9, [0, 3, 5], preds)
    np.testing.assert_allclose(out, [1, 1, 1, 2, 3, 4, 4, 5, 5])


def test_frame_windows_and_overlap_averaging_in_assemble(tmp_path):
    c = frame_corpus(tmp_path, n_clips=4)
    cfg = clip_config(
        c, tmp_path, task={"type": "frame"}, data={"window": {"length": 30, "hop": 20}}
    )
    dm = _dm(cfg)
    t = dm.tables
    seq = torch.arange(len(t.win_start))
    b = dm.gather(seq)
    assert b["face"].shape[:2] == (len(seq), 30) and b["audio"].shape[:2] == (len(seq), 30)
    # prediction of window w = w at every frame: per-frame result is the mean of covering windows
    out = seq[:, None, None].float().expand(-1, 30, 2)
    res = dm.assemble(seq, out)
    for i, cid in enumerate(t.clip_ids):
        n = int(t.lab_off[i + 1] - t.lab_off[i])
        wins = np.flatnonzero(t.win_clip == i)
        starts = [int(t.win_start[w]) - int(t.lab_off[i]) for w in wins]
        assert starts == window_starts(n, 30, 20)
        want = overlap_average(n, starts, [np.full(30, float(w)) for w in wins])
        got = res["pred"][np.array(res["clip_ids"]) == cid, 0]  # numpy: assembled by the task
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # labels: NaN frames are masked, the rest equal the annotation
    assert not b["y_mask"][0, :3, 0].any() and b["y_mask"][0, 3:, 1].all()


def test_frame_timeline_maps_modalities_to_label_times(tmp_path):
    c = frame_corpus(tmp_path, n_clips=2)
    cfg = clip_config(
        c,
        tmp_path,
        task={"type": "frame"},
        data={"normalize": False, "window": {"length": 500, "hop": 400}},
    )
    dm = _dm(cfg)
    b = dm.gather(torch.tensor([0]))
    with FeatureFile(c["audio"]) as ff:
        au = ff.clip(dm.tables.clip_ids[0])
    n = int(dm.tables.lab_off[1])
    lab_t = dm.tables.lab_time[:n]
    nearest = np.abs(au.timestamps[None] - lab_t[:, None]).argmin(1)  # audio at 20 Hz, labels 10 Hz
    np.testing.assert_allclose(b["audio"][0, :n].numpy(), au.values[nearest])
    assert b["audio_mask"][0, :n].all() and not b["audio_mask"][0, n:].any()


def test_linear_timeline_resamples_values_onto_label_times(tmp_path):
    from avemo.data.timeline import align

    c = frame_corpus(tmp_path, n_clips=2)
    cfg = clip_config(
        c,
        tmp_path,
        task={"type": "frame"},
        data={
            "normalize": False,
            "timeline": {"method": "linear"},
            "window": {"length": 500, "hop": 400},
        },
    )
    dm = _dm(cfg)
    b = dm.gather(torch.tensor([1]))
    cid = dm.tables.clip_ids[1]
    with FeatureFile(c["face"]) as ff:
        fa = ff.clip(cid)
    lab_t = dm.tables.lab_time[dm.tables.lab_off[1] : dm.tables.lab_off[2]]
    want, ok = align(fa.values, fa.timestamps, lab_t, "linear", mask=fa.mask)
    n = len(lab_t)
    np.testing.assert_allclose(b["face"][0, :n].numpy(), want, rtol=1e-5, atol=1e-6)
    # face rows are at t + 0.01 s: interpolation differs from the raw rows
    assert not np.allclose(b["face"][0, 1:n].numpy(), fa.values[1:n])
    assert dm.arrays["face"].values.shape[0] > 0 and "face" in dm.aligned


def test_float16_device_copy_gives_float32_batches_close_to_float32(corpus):
    tmp, c = corpus
    cache: dict = {}
    full = _dm(clip_config(c, tmp), cache)
    half = _dm(clip_config(c, tmp, data={"dtype": "float16"}), cache)
    assert half.arrays["face"].values.dtype == torch.float16 and len(cache) == 4
    seq = full.part_seqs["val"]
    a, b = full.gather(seq), half.gather(seq)
    assert b["face"].dtype == torch.float32
    torch.testing.assert_close(a["face"], b["face"], atol=2e-2, rtol=1e-2)
    assert torch.equal(a["face_mask"], b["face_mask"])
