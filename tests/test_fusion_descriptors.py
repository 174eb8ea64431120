"""The ``descriptors`` model and ``descriptor_stats`` temporal module: masked statistics equal
numpy's on the valid rows only, the model with one stream and no hidden layer is exactly a
linear function of standardised statistics (the functionals + linear classifier special case),
deep branches fuse in, and it learns a class that lives in a descriptor's spread."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avemo.fusion.models.model_descriptors import check_stats, descriptor_stats
from avemo.fusion.registry import MODELS, TEMPORAL, load_all
from avemo.fusion.spec import TaskSpec

load_all()


def test_masked_statistics_match_numpy_on_valid_rows():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 5, generator=g)
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[1, 17:] = False
    mask[2] = False
    x[1, 17:] = float("nan")  # invalid rows may hold anything
    stats = ["mean", "std", "min", "p10", "p50", "p90", "max"]
    out = descriptor_stats(x, mask, stats).reshape(3, len(stats), 5).numpy()
    for b, n in ((0, 40), (1, 17)):
        v = x[b, :n].numpy().astype(np.float64)
        ref = [v.mean(0), v.std(0), v.min(0), *np.percentile(v, [10, 50, 90], axis=0), v.max(0)]
        np.testing.assert_allclose(out[b], np.stack(ref), atol=2e-5)
    assert (out[2] == 0).all()  # no valid row -> zeros, not NaN


def test_statistic_names_are_checked():
    assert check_stats(["mean", "p5", "p97.5"]) == ["mean", "p5", "p97.5"]
    for bad in (["median"], ["p101"], []):
        with pytest.raises(ValueError, match="mean, std, min, max"):
            check_stats(bad)


def test_one_stream_no_hidden_layer_is_linear_in_standardised_statistics():
    torch.manual_seed(0)
    m = MODELS.build(
        "descriptors",
        inputs={"lld": (6,)},
        task=TaskSpec("clip", 4),
        stats=["mean", "std"],
        clip=None,
        dropout=0.3,
    )
    batches = [torch.randn(8, 30, 6) * 3 + 1 for _ in range(5)]
    m.train()
    for b in batches:  # running statistics = average over the training batches
        m({"lld": b})
    m.eval()
    x = torch.randn(4, 25, 6)
    mask = torch.ones(4, 25, dtype=torch.bool)
    mask[0, 10:] = False
    norm = m.streams["lld"].norm
    s = descriptor_stats(x, mask, ["mean", "std"])
    z = (s - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    lin = m.head.net[-1]
    expected = z @ lin.weight.T + lin.bias
    got = m({"lld": x, "lld_mask": mask})
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert len(m.head.net) == 1 and isinstance(lin, torch.nn.Linear)  # nothing but the linear map


def test_clip_bounds_an_outlying_speaker():
    m = MODELS.build(
        "descriptors",
        inputs={"lld": (3,)},
        task=TaskSpec("clip", 2),
        stats=["mean"],
        clip=2.0,
        dropout=0.0,
    )
    m.train()
    m({"lld": torch.randn(16, 20, 3)})
    m.eval()
    z = m.streams["lld"](torch.full((1, 20, 3), 1e6), torch.ones(1, 20, dtype=torch.bool))
    assert z.abs().max() <= 2.0


def test_streams_and_deep_branches_fuse():
    m = MODELS.build(
        "descriptors",
        inputs={"lld": (130,), "pitch": (4,), "logmel": (64,)},
        task=TaskSpec("clip", 7),
        descriptors=["lld", "pitch"],
        per_modality_stats={"pitch": ["mean", "p50"]},
        deep={
            "logmel": {
                "encoder": {
                    "name": "audio_cnn",
                    "channels": [8, 16],
                    "pool_time": [2, 2],
                    "pool_freq": [2, 2],
                },
                "temporal": "fan_self",
            }
        },
    )
    assert m.streams["lld"].out_dim == 5 * 130 and m.streams["pitch"].out_dim == 2 * 4
    batch = {
        "lld": torch.randn(3, 50, 130),
        "pitch": torch.randn(3, 31, 4),
        "logmel": torch.randn(3, 40, 64),
        "logmel_mask": torch.ones(3, 40, dtype=torch.bool),
    }
    out = m(batch)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    assert m.attention["logmel"].shape == (3, 10)  # the CNN pooled time by 4
    with pytest.raises(ValueError, match="clip tasks only"):
        MODELS.build("descriptors", inputs={"lld": (3,)}, task=TaskSpec("frame", 2))


def test_descriptor_stats_temporal_module():
    t = TEMPORAL.build("descriptor_stats", 4, stats=["mean", "p50"])
    x = torch.randn(2, 9, 4)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    out = t(x, mask)
    assert t.out_dim == 8 and out.pooled.shape == (2, 8) and out.seq.shape == (2, 9, 8)
    torch.testing.assert_close(out.pooled[1, 4:], x[1, :5].median(0).values)
    assert (out.seq[1, 5:] == 0).all()


def test_learns_a_class_that_lives_in_a_descriptors_spread():
    """Two classes with equal means and different frame-to-frame spread: a mean-pooled linear
    model cannot separate them, the std statistic does (as in arousal and pitch variability)."""
    g = torch.Generator().manual_seed(1)
    y = torch.arange(200) % 2
    x = torch.randn(200, 60, 3, generator=g) * (1 + 2 * y[:, None, None].float())
    torch.manual_seed(0)
    m = MODELS.build(
        "descriptors",
        inputs={"lld": (3,)},
        task=TaskSpec("clip", 2),
        stats=["mean", "std"],
        dropout=0.1,
    )
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.train()
    for _ in range(60):
        for i in range(0, 160, 32):
            loss = torch.nn.functional.cross_entropy(m({"lld": x[i : i + 32]}), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.eval()
    acc = (m({"lld": x[160:]}).argmax(1) == y[160:]).float().mean()
    assert acc > 0.95


def test_a_training_batch_of_one_clip_uses_the_running_statistics():
    m = MODELS.build("descriptors", inputs={"lld": (3,)}, task=TaskSpec("clip", 2), dropout=0.0)
    m.train()
    m({"lld": torch.randn(8, 20, 3)})
    norm = m.streams["lld"].norm
    before = norm.running_mean.clone()
    out = m({"lld": torch.randn(1, 20, 3)})  # e.g. the last batch of an epoch
    assert out.shape == (1, 2) and torch.isfinite(out).all()
    torch.testing.assert_close(norm.running_mean, before)  # not updated by a batch of one
