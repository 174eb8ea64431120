"""``stats`` temporal pooling: masked mean + std over valid frames, padding never leaks."""

from __future__ import annotations

import torch

from avemo.fusion.registry import TEMPORAL, load_all
from avemo.fusion.spec import TaskSpec

load_all()


def test_stats_pool_matches_numpy_on_valid_frames_and_ignores_padding() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 5, generator=g)
    lens = [10, 4, 1]
    mask = torch.arange(10)[None] < torch.tensor(lens)[:, None]
    x_bad = torch.where(mask[..., None], x, torch.full((), float("nan")))  # NaN in padding
    pool = TEMPORAL.build("stats", 5)
    out = pool(x_bad, mask)
    assert pool.out_dim == 10 and out.pooled.shape == (3, 10) and out.seq.shape == (3, 10, 10)
    assert torch.isfinite(out.pooled).all() and torch.isfinite(out.seq).all()
    for i, n in enumerate(lens):
        v = x[i, :n].double()
        mean, std = v.mean(0), v.std(0, unbiased=False)
        assert torch.allclose(out.pooled[i, :5].double(), mean, atol=1e-5)
        assert torch.allclose(out.pooled[i, 5:].double(), (std**2 + 1e-5).sqrt(), atol=1e-5)
        assert (out.seq[i, n:] == 0).all()


def test_stats_pool_in_a_unimodal_model() -> None:
    from avemo.fusion.registry import MODELS

    m = MODELS.build(
        "unimodal",
        inputs={"audio": (64,)},
        task=TaskSpec("clip", 7),
        encoder={"name": "audio_cnn", "channels": [4, 8], "pool_time": [2, 2], "pool_freq": [2, 2]},
        temporal="stats",
    )
    out = m(
        {
            "audio": torch.randn(2, 16, 64),
            "audio_mask": torch.arange(16)[None] < torch.tensor([[16], [5]]),
        }
    )
    assert out.shape == (2, 7) and torch.isfinite(out).all()
