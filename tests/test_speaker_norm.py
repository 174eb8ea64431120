"""Per-speaker normalisation (``data.speaker_norm``, ``fusion.speaker_norm``) uses each speaker's
own rows only -- no labels, no other speaker's data -- on real HDF5 feature files. (The EmoDB
nested study's choice, which never reads an outer test speaker: test_experiments_emodb_nested.py.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from _fusion_data import clip_config, clip_corpus

from avemo.data.store import FeatureFile
from avemo.fusion.config import ConfigError, load_config
from avemo.fusion.datamodule import CachedFeatureDataModule, load_features
from avemo.fusion.speaker_norm import normalise_groups, speaker_normalised


def test_each_group_is_standardised_over_its_own_valid_rows():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(3, 2, (40, 4)), rng.normal(-5, 0.5, (30, 4))])
    group = np.array(["a"] * 40 + ["b"] * 30, dtype=object)
    valid = rng.random(70) > 0.2
    x[~valid] = 1e6  # invalid rows may hold anything: they must not move the statistics
    z = normalise_groups(x, valid, group)
    for g in ("a", "b"):
        v = z[(group == g) & valid]
        np.testing.assert_allclose(v.mean(0), 0, atol=1e-9)
        np.testing.assert_allclose(v.std(0), 1, atol=1e-9)
    other = x.copy()
    other[group == "b"] = rng.normal(100, 30, (30, 4))  # another speaker's data changes ...
    np.testing.assert_array_equal(
        normalise_groups(other, valid, group)[group == "a"], z[group == "a"]
    )  # ... a's not
    const = normalise_groups(np.ones((5, 2)), np.ones(5, bool), np.zeros(5))
    assert np.isfinite(const).all() and (const == 0).all()
    noisy = np.full((6, 1), 1e4) + np.array([[0.0], [1e-12], [0.0], [-1e-12], [0.0], [0.0]])
    assert (
        normalise_groups(noisy, np.ones(6, bool), np.zeros(6)) == 0
    ).all()  # rounding noise is not signal


def test_feature_arrays_copy_per_speaker_leaves_the_cached_file_alone(tmp_path):
    c = clip_corpus(tmp_path)
    man = pd.read_csv(c["manifest"], dtype=str)
    who = dict(zip(man["clip_id"], man["subject"], strict=True))
    cache: dict = {}
    a = load_features(c["face"], "cpu", cache)
    before = a.values.clone()
    z = speaker_normalised(a, who)
    torch.testing.assert_close(a.values, before, rtol=0, atol=0)  # the shared tensor is untouched
    for s in sorted(set(who.values())):
        rows = np.concatenate([np.arange(*a.rows_of(cid)) for cid, w in who.items() if w == s])
        rows = rows[a.row_mask.numpy()[rows]]
        v = z.values[rows].double()
        torch.testing.assert_close(
            v.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            v.std(0, unbiased=False), torch.ones(8, dtype=torch.float64), atol=1e-5, rtol=0
        )
    # one speaker's rows changed -> every other speaker's normalised rows are the same
    s0 = [cid for cid, w in who.items() if w == "s0"]
    changed = a.values.clone()
    for cid in s0:
        lo, hi = a.rows_of(cid)
        changed[lo:hi] = changed[lo:hi] * 7 + 3
    z2 = speaker_normalised(dataclasses.replace(a, values=changed), who)
    keep = np.ones(len(a.values), bool)
    for cid in s0:
        keep[slice(*a.rows_of(cid))] = False
    torch.testing.assert_close(z2.values[keep], z.values[keep], rtol=0, atol=0)


def _gathered(cfg: dict) -> tuple[CachedFeatureDataModule, dict[str, torch.Tensor]]:
    dm = CachedFeatureDataModule(load_config(cfg), "cpu")
    dm.setup()
    return dm, dm.gather(torch.arange(len(dm.manifest)))


def test_datamodule_option_uses_no_labels(tmp_path):
    c = clip_corpus(tmp_path)
    cfg = clip_config(c, tmp_path, data={"speaker_norm": True, "normalize": False})
    dm, b = _gathered(cfg)
    assert any("per speaker" in n for n in dm.notes)
    with FeatureFile(c["face"]) as ff:
        raw = {cid: ff.clip(cid) for cid in ff.clip_ids}
    subj = dm.manifest["subject"].astype(str).to_numpy()
    for s in set(
        subj
    ):  # each speaker's valid rows: mean 0, std 1 (no training statistics after it)
        idx = np.flatnonzero(subj == s)
        v = b["face"][idx][b["face_mask"][idx]].double()
        assert torch.allclose(v.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-5)
    cid = str(dm.manifest["clip_id"].iloc[0])
    assert not np.allclose(
        b["face"][0, : len(raw[cid].values)].numpy(), raw[cid].values
    )  # it did something
    man = pd.read_csv(c["manifest"])
    man["label"] = (
        man["label"].sample(frac=1.0, random_state=3).to_numpy()
    )  # other labels, same clips
    man.to_csv(c["manifest"], index=False)
    _, b2 = _gathered(cfg)
    torch.testing.assert_close(b2["face"], b["face"], rtol=0, atol=0)
    torch.testing.assert_close(b2["audio"], b["audio"], rtol=0, atol=0)


def test_datamodule_option_is_checked(tmp_path):
    c = clip_corpus(tmp_path)
    with pytest.raises(ConfigError, match="speaker_norm"):
        load_config(clip_config(c, tmp_path, data={"speaker_norm": "per-speaker"}))


def test_predict_normalises_the_given_clips_as_one_speaker(tmp_path):
    from types import SimpleNamespace

    from avemo.fusion.features import FeatureFiles
    from avemo.fusion.predict import _datamodule
    from avemo.fusion.tasks import build_task

    c = clip_corpus(tmp_path)
    cfg = load_config(clip_config(c, tmp_path, data={"speaker_norm": True, "normalize": False}))
    ids = ["c001", "c004", "c010", "c022"]  # new clips of one (unknown) speaker
    run = SimpleNamespace(cfg=cfg, device=torch.device("cpu"), task=build_task(cfg), stats={})
    dm = _datamodule(run, FeatureFiles(cfg.data, "cpu"), ids)
    b = dm.gather(dm.part_seqs["predict"])
    v = b["face"][b["face_mask"]].double()
    assert torch.allclose(v.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(v.std(0, unbiased=False), torch.ones(8, dtype=torch.float64), atol=1e-4)
