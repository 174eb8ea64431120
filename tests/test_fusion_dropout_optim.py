"""Training-only pieces that were never exercised (issue 21): modality dropout's masking in the
datamodule's batches, the ``sgd`` optimiser against torch's update formula written out by hand,
and the ``jca_reference`` schedule against the released JCA training loop's formula per epoch."""

from __future__ import annotations

import math

import pytest
import torch
from _fusion_data import clip_config, clip_corpus

from avemo.fusion.config import load_config
from avemo.fusion.datamodule import CachedFeatureDataModule
from avemo.fusion.registry import OPTIMIZERS, SCHEDULES, load_all

load_all()


@pytest.fixture(scope="module")
def dm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mdrop")
    c = clip_corpus(tmp)
    dm = CachedFeatureDataModule(load_config(clip_config(c, tmp)), "cpu")
    dm.setup()
    return dm


def _masks(batch, mods):
    return torch.stack([batch[f"{m}_mask"].any(1) for m in mods], 1)  # [B, M]: any valid row


def test_modality_dropout_masks_one_whole_modality_at_rate_p(dm) -> None:
    mods = list(dm.modalities)
    assert len(mods) == 2
    seqs = dm.part_seqs["train"].repeat(200)  # many draws of the same sequences
    full = dm.gather(seqs)
    present = _masks(full, mods)
    assert present.all(), "the fixture corpus has both modalities on every clip"
    p = 0.4
    got = dm.gather(seqs, dropout=p, generator=torch.Generator().manual_seed(0))
    kept = _masks(got, mods)
    dropped = ~kept
    assert not dropped.all(1).any(), "a sample lost both modalities"
    n = len(seqs)
    # binomial: P(drop) = p, each modality p / 2; 5 standard deviations
    for rate, count in (
        (p, dropped.any(1).sum()),
        (p / 2, dropped[:, 0].sum()),
        (p / 2, dropped[:, 1].sum()),
    ):
        assert abs(int(count) - rate * n) < 5 * math.sqrt(n * rate * (1 - rate)), (rate, count)
    for i, m in enumerate(mods):
        gone = dropped[:, i]
        # a dropped modality is masked on every row and zero; the other is untouched
        assert not got[f"{m}_mask"][gone].any() and (got[m][gone] == 0).all()
        assert torch.equal(got[f"{m}_mask"][~gone], full[f"{m}_mask"][~gone])
        torch.testing.assert_close(got[m][~gone], full[m][~gone], rtol=0, atol=0)
    # labels are never dropped, and p = 0 changes nothing
    assert torch.equal(got["index"], full["index"])
    none = dm.gather(seqs, dropout=0.0, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(none[f"{m}_mask"], full[f"{m}_mask"]) for m in mods)


def test_modality_dropout_only_in_training_batches(tmp_path) -> None:
    c = clip_corpus(tmp_path)
    dm = CachedFeatureDataModule(
        load_config(clip_config(c, tmp_path, data={"modality_dropout": 0.9})), "cpu"
    )
    dm.setup()
    assert dm.train_dataloader().dropout == 0.9
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        for b in loader:
            assert all(b[f"{m}_mask"].any(1).all() for m in dm.modalities)
    dropped = sum(
        int((~_masks(b, list(dm.modalities))).any(1).sum()) for b in dm.train_dataloader()
    )
    assert dropped > 0


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_follows_the_momentum_update_by_hand(nesterov) -> None:
    lr, mu, wd, damp = 0.05, 0.8, 0.01, 0.0
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = OPTIMIZERS.build("sgd", [w], lr=lr, momentum=mu, weight_decay=wd, nesterov=nesterov)
    x = w.detach().clone()
    buf = None
    target = torch.tensor([0.3, 0.1, -0.4])
    for _ in range(4):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
        g = 2 * (x - target) + wd * x  # the gradient of the same loss, plus L2 decay
        buf = g.clone() if buf is None else mu * buf + (1 - damp) * g
        x = x - lr * (g + mu * buf if nesterov else buf)
        torch.testing.assert_close(w.detach(), x, rtol=1e-6, atol=1e-7)


def test_sgd_defaults_are_documented_ones() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    group = OPTIMIZERS.build("sgd", [w]).param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (
        0.01,
        0.9,
        0.0,
        False,
    )


def _released_jca_lr(epoch: int) -> float:
    """What the released JCA code (commit f1f0a0c, train.py with config_file.json) trains with:
    the optimiser's config lr 1e-4 until ``epoch > learning_rate_decay_start`` (5), from then
    ``lr * learning_rate_decay_rate ** ((epoch - 5) // learning_rate_decay_every)`` with lr 1e-3,
    rate 0.8, every 2; epochs counted from ``start_epoch`` 0."""
    if epoch > 5:
        return 1e-3 * 0.8 ** ((epoch - 5) // 2)
    return 1e-4


def test_jca_reference_schedule_per_epoch() -> None:
    base = 3e-4  # the optimiser's own lr: the schedule must override it, not scale it
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=base)
    sch = SCHEDULES.build(
        "jca_reference", opt, base_lr=base, monitor="val/loss", mode="min", max_epochs=20
    )["scheduler"]
    seen = []
    for _epoch in range(16):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    want = [_released_jca_lr(e) for e in range(16)]
    assert seen == pytest.approx(want, rel=1e-9)
    assert want[4:9] == pytest.approx([1e-4, 1e-4, 1e-3, 8e-4, 8e-4])  # the jump, then the decay
