"""The CPU fast paths of stage two: bulk-uniform dropout, pooled-only temporal modules, and the
allocator setting training processes apply. Each keeps the semantics of the slow path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.func import vmap

from avemo import allocator
from avemo.fusion.models.dropout import Dropout, dropout
from avemo.fusion.registry import MODELS, TEMPORAL, load_all
from avemo.fusion.spec import TaskSpec

load_all()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.6])
def test_dropout_keeps_one_minus_p_and_scales_the_kept(p) -> None:
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, p)
    kept = y != 0
    # 400k Bernoulli draws: the kept share is within 5 standard errors of 1 - p
    se = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * se
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert abs(y.mean().item() - 1.0) < 5 * se / (1 - p)  # unbiased: E[y] = x


def test_dropout_gradient_is_the_mask_and_draws_follow_the_seed() -> None:
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.4)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() / 0.6)  # d(x * mask)/dx
    torch.manual_seed(3)
    torch.testing.assert_close(dropout(x.detach(), 0.4), y.detach())
    assert not torch.equal(dropout(x.detach(), 0.4), y.detach())  # the next draw differs


def test_dropout_identity_in_eval_and_edges() -> None:
    x = torch.randn(5, 7)
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="probability"):
        dropout(x, 1.5)
    m = Dropout(0.5).eval()
    assert m(x) is x and isinstance(m, nn.Dropout) and not m.state_dict()


def test_dropout_under_vmap_draws_per_cell_masks() -> None:
    """Stacked grid cells (``randomness="different"``) each get their own mask; the word
    path inside vmap is refused by vmap, not silently shared between cells."""
    from avemo.fusion.models.dropout import per_cell_masks

    torch.manual_seed(0)
    with per_cell_masks():
        y = vmap(lambda t: dropout(t, 0.5), randomness="different")(torch.ones(4, 1000))
    assert y.shape == (4, 1000)
    assert len({tuple((row != 0).tolist()) for row in y}) == 4
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(lambda t: dropout(t, 0.5), randomness="different")(torch.ones(4, 1000))


@pytest.mark.parametrize("p", [0.1, 0.6])
def test_dropout_masks_are_independent_across_lanes_and_positions(p) -> None:
    """Four mask elements share one 64-bit word: neighbours must still be independent."""
    torch.manual_seed(1)
    keep = (dropout(torch.ones(1_000_000), p) != 0).float()
    for lag in (1, 2, 3, 4, 5):
        both = (keep[:-lag] * keep[lag:]).mean().item()
        assert abs(both - (1 - p) ** 2) < 0.004, (lag, both)


def _dropouts(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_uses_the_fast_dropout(name) -> None:
    """A new model built with ``nn.Dropout`` would pay the slow CPU sampler again."""
    from tests.test_fusion_models_zoo import CLIP7, FRAME2, _default_model

    for task in (CLIP7, FRAME2):
        model, _ = _default_model(name, task)
        if model is None:
            continue
        slow = [type(m).__name__ for m in _dropouts(model) if not isinstance(m, Dropout)]
        assert not slow, f"{name}: {slow} (use avemo.fusion.models.dropout.Dropout)"


def test_fan_relation_pooled_only_skips_seq_dropout_and_keeps_pooled() -> None:
    torch.manual_seed(0)
    full = TEMPORAL.build("fan_relation", 16)
    x, mask = torch.randn(4, 9, 16), torch.ones(4, 9, dtype=torch.bool)
    mask[1, 5:] = False
    full.eval()
    with torch.no_grad():
        ref = full(x, mask)
        full.pooled_only = True
        fast = full(x, mask)
    torch.testing.assert_close(fast.pooled, ref.pooled)
    torch.testing.assert_close(fast.seq, ref.seq)  # eval: nothing to skip
    assert (fast.seq[1, 5:] == 0).all()  # invalid rows stay zero without the final where
    full.train()
    out = full(x, mask)  # training: seq is the weighted pair, not dropped out
    nz = (out.seq[mask] != 0).float().mean()
    assert nz > 0.95, f"pooled-only seq should not be dropped out ({nz:.2f} non-zero)"


@pytest.mark.parametrize(
    "task,pooled_only",
    [(TaskSpec("clip", 3), True), (TaskSpec("frame", 2), False)],
)
def test_zhou_marks_temporal_modules_pooled_only_for_clip_tasks(task, pooled_only) -> None:
    model = MODELS.build(
        "zhou", inputs={"face": (8,), "audio": (6,)}, task=task, temporal="fan_relation"
    )
    assert {b.temporal.pooled_only for b in model.branches.values()} == {pooled_only}


def test_tune_allocator_applies_once_and_can_be_turned_off(monkeypatch) -> None:
    import sys

    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("AVEMO_MALLOC", "system")
    assert allocator.tune_allocator() is False
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.delenv("AVEMO_MALLOC")
    want = sys.platform.startswith("linux") and "glibc" in " ".join(
        __import__("platform").libc_ver()
    )
    assert allocator.tune_allocator() is bool(want)
    assert allocator.tune_allocator() is bool(want)  # cached: mallopt is called once


def test_transformer_valid_rows_only_projection_equals_the_padded_one() -> None:
    """Packing Q/K/V to the valid rows changes nothing at valid rows, forward or backward."""
    torch.manual_seed(0)
    mod = TEMPORAL.build("transformer", 16, heads=2).eval()
    x, mask = torch.randn(3, 11, 16), torch.ones(3, 11, dtype=torch.bool)
    mask[1, 4:], mask[2, 1:], mask[0, 3] = False, False, False
    outs, grads = [], []
    for pack in (True, False):
        mod.pack_rows = pack
        xi = x.clone().requires_grad_(True)
        out = mod(xi, mask)
        (out.pooled.pow(2).sum() + out.seq[mask].sum()).backward()
        outs.append(out)
        grads.append((xi.grad.clone(), mod.q.weight.grad.clone(), mod.v.bias.grad.clone()))
        mod.zero_grad()
    torch.testing.assert_close(outs[0].pooled, outs[1].pooled, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[0].seq, outs[1].seq, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[0].attention, outs[1].attention, rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("monitor", ["val/accuracy", "none"])
def test_final_val_predictions_reuse_the_fit_pass_and_equal_a_fresh_pass(tmp_path, monitor) -> None:
    """The final val scores come from the validation pass of the loaded weights' epoch; a
    fresh pass of those weights gives the same outputs (the assumption the reuse rests on)."""
    from workflows_helpers import make_corpus

    from avemo.fusion import train as T
    from avemo.fusion.config import load_config
    from avemo.fusion.evaluate import predict_partition

    make_corpus(tmp_path / "c")
    cfg = load_config(
        {
            "name": "reuse",
            "seed": 0,
            "data": {
                "manifest": str(tmp_path / "c/manifest.csv"),
                "batch_size": 8,
                "features": {
                    "face": str(tmp_path / "c/features/face.h5"),
                    "audio": str(tmp_path / "c/features/audio.h5"),
                },
            },
            "model": {"name": "zhou", "temporal": "fan_relation", "fusion": "fbp"},
            "optim": {"name": "adam", "lr": 0.05},
            "trainer": {
                "max_epochs": 4,
                "progress": "none",
                "monitor": monitor,
                "early_stopping": None,
            },
            "split": {"method": "official"},
            "output": {"plots": False, "verbose": False},
        }
    )
    dm = T.build_datamodule(cfg, "cpu", feature_cache={})
    calls = []
    real = T.predict_partition
    T.predict_partition = lambda *a, **k: calls.append(a[2]) or real(*a, **k)
    try:
        res = T.fit_and_evaluate(cfg, dm, tmp_path / "run", progress=False)
    finally:
        T.predict_partition = real
    assert "val" not in calls, "the final val scores must reuse the fit's own pass"
    model = T.build_model(cfg, dm)
    ckpt = "best.pt" if monitor != "none" else "last.pt"
    model.load_state_dict(torch.load(tmp_path / "run/checkpoints" / ckpt, weights_only=True))
    fresh = predict_partition(model, dm, "val")
    path = str(res["predictions"])
    table = pd.read_csv(path) if path.endswith(".csv") else pd.read_parquet(path)
    val = table[table["partition"] == "val"] if "partition" in table else table
    probs = [c for c in val.columns if c.startswith("p_")]
    want = torch.from_numpy(np.asarray(fresh["scores"])).softmax(-1).numpy()
    assert probs and len(val) == len(want)
    got = val.set_index("clip_id").loc[fresh["clip_ids"], probs].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
