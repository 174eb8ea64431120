"""audio_cnn training-only augmentation: SpecAugment masks + circular time shift.

Augmentation must change training inputs only (eval output identical to an un-augmented
encoder with the same weights), keep shapes, and keep the mask rule (padding stays padding)."""

from __future__ import annotations

import pytest
import torch

from avemo.fusion.registry import ENCODERS, load_all

load_all()

AUG = {
    "time_masks": 2,
    "time_mask_width": 5,
    "freq_masks": 2,
    "freq_mask_width": 4,
    "time_shift": 6,
}
CNN = {"channels": [4, 8], "pool_time": [2, 2], "pool_freq": [2, 2], "dropout": 0.0}


def _batch(b: int = 4, t: int = 24, f: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, t, f, generator=g) + 3.0  # offset: no value is 0 by chance
    lens = torch.tensor([t, t - 5, 9, 1][:b])
    mask = torch.arange(t)[None] < lens[:, None]
    return x, mask


def test_eval_output_unchanged_by_augment_options() -> None:
    torch.manual_seed(0)
    plain = ENCODERS.build("audio_cnn", (16,), **CNN)
    aug = ENCODERS.build("audio_cnn", (16,), **CNN, **AUG)
    aug.load_state_dict(plain.state_dict())
    x, mask = _batch()
    plain.eval()
    aug.eval()
    a, b = plain(x, mask), aug(x, mask)
    assert (
        torch.equal(a.seq, b.seq) and torch.equal(a.mask, b.mask) and torch.equal(a.cells, b.cells)
    )


def test_default_has_no_augmentation_in_training() -> None:
    torch.manual_seed(0)
    enc = ENCODERS.build("audio_cnn", (16,), **CNN).train()
    x, mask = _batch()
    xi = x.unsqueeze(1)  # [B, C=1, T, F]
    y, m = enc.augment(xi, mask)
    assert torch.equal(y, xi) and torch.equal(m, mask)


def test_training_augment_changes_inputs_keeps_shapes_and_padding() -> None:
    torch.manual_seed(1)
    enc = ENCODERS.build("audio_cnn", (16,), **CNN, **AUG).train()
    x, mask = _batch()
    xi = torch.where(mask[:, None, :, None], x.unsqueeze(1), torch.zeros(()))
    y, m = enc.augment(xi, mask)
    assert y.shape == xi.shape and torch.equal(m, mask)  # prefix masks: rolling keeps the mask
    assert not torch.equal(y, xi)
    assert (y[~mask[:, None, :, None].expand_as(y)] == 0).all()  # padding stays zero
    # masked values are whole rows / whole bands of zeros, nothing else is altered but moved
    zero = y[:, 0] == 0  # [B, T, F]
    for i in range(x.shape[0]):
        n = int(mask[i].sum())
        rows = zero[i, :n]
        band = rows.all(0)  # frequency bands masked for the whole clip
        timed = rows.all(1)  # masked rows
        assert int(band.sum()) <= 2 * 4 and int(timed.sum()) <= 2 * 5 or n == 1
        assert ((rows == (band[None] | timed[:, None])) | (n == 1)).all()


def test_time_shift_is_circular_within_valid_span() -> None:
    torch.manual_seed(2)
    enc = ENCODERS.build("audio_cnn", (16,), **CNN, time_shift=6).train()
    x, mask = _batch()
    xi = torch.where(mask[:, None, :, None], x.unsqueeze(1), torch.zeros(()))
    y, m = enc.augment(xi, mask)
    assert torch.equal(m, mask)
    for i in range(x.shape[0]):
        n = int(mask[i].sum())
        got, src = y[i, 0, :n], xi[i, 0, :n]
        assert any(torch.equal(got, torch.roll(src, s, 0)) for s in range(-6, 7))
        assert torch.equal(y[i, 0, n:], xi[i, 0, n:])


def test_augment_forward_shapes_and_mask_downsampling() -> None:
    torch.manual_seed(3)
    enc = ENCODERS.build("audio_cnn", (2, 16), **CNN, **AUG).train()
    x = torch.randn(3, 20, 2, 16)
    mask = torch.arange(20)[None] < torch.tensor([20, 13, 4])[:, None]
    out = enc(x, mask)
    assert out.seq.shape == (3, 5, 8)
    assert out.mask.tolist() == [[True] * 5, [True] * 4 + [False], [True] + [False] * 4]
    assert torch.isfinite(out.seq).all()


def test_negative_augment_option_is_rejected() -> None:
    with pytest.raises(ValueError, match="time_shift"):
        ENCODERS.build("audio_cnn", (16,), **CNN, time_shift=-1)
