"""Factorized bilinear pooling: the MFB steps, power + L2 normalisation, zero-vector guard."""

from __future__ import annotations

import torch

from avemo.fusion.models.fusion_fbp import l2_normalise, power_normalise
from avemo.fusion.registry import FUSION, load_all

load_all()


def test_power_and_l2_normalisation_values() -> None:
    z = torch.tensor([4.0, -9.0, 0.0, 0.25])
    torch.testing.assert_close(power_normalise(z), torch.tensor([2.0, -3.0, 0.0, 0.5]))
    torch.testing.assert_close(l2_normalise(torch.tensor([3.0, 4.0])), torch.tensor([0.6, 0.8]))
    assert torch.equal(l2_normalise(torch.zeros(5)), torch.zeros(5))


def test_fbp_matches_the_mfb_steps() -> None:
    torch.manual_seed(0)
    fbp = FUSION.build("fbp", [6, 4], k=3, o=5).eval()
    assert fbp.proj_a.out_features == fbp.proj_b.out_features == 15 and fbp.out_dim == 5
    a, v = torch.randn(2, 6), torch.randn(2, 4)
    x = a @ fbp.proj_a.weight.T + fbp.proj_a.bias
    y = v @ fbp.proj_b.weight.T + fbp.proj_b.bias
    z = (x * y).reshape(2, 5, 3).sum(-1)  # groups of k consecutive elements
    z = torch.sqrt(torch.relu(z)) - torch.sqrt(torch.relu(-z))
    z = z / z.norm(dim=-1, keepdim=True)
    out = fbp([a, v])
    torch.testing.assert_close(out, z)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))


def test_fbp_defaults_frames_and_zero_vector_gradients() -> None:
    fbp = FUSION.build("fbp", [8, 8])
    assert (fbp.k, fbp.o, fbp.drop.p, fbp.power, fbp.l2) == (5, 1000, 0.1, True, True)
    small = FUSION.build("fbp", [3, 3], k=2, o=4).eval()
    out = small([torch.randn(2, 7, 3), torch.randn(2, 7, 3)])  # per-frame fusion
    assert out.shape == (2, 7, 4)
    torch.nn.init.zeros_(small.proj_a.weight)
    torch.nn.init.zeros_(small.proj_a.bias)
    a = torch.randn(1, 3, requires_grad=True)
    out = small([a, torch.randn(1, 3)])
    assert torch.equal(out, torch.zeros(1, 4))
    out.sum().backward()
    assert torch.isfinite(small.proj_a.weight.grad).all() and torch.isfinite(a.grad).all()


def test_fbp_options_switch_normalisation_off() -> None:
    torch.manual_seed(0)
    raw = FUSION.build("fbp", [3, 3], k=2, o=4, power=False, l2=False).eval()
    a, v = torch.randn(1, 3), torch.randn(1, 3)
    z = (a @ raw.proj_a.weight.T + raw.proj_a.bias) * (v @ raw.proj_b.weight.T + raw.proj_b.bias)
    torch.testing.assert_close(raw([a, v]), z.reshape(1, 4, 2).sum(-1))


def test_concat_fusion() -> None:
    cat = FUSION.build("concat", [2, 3]).eval()
    assert cat.out_dim == 5
    out = cat([torch.ones(1, 2), torch.zeros(1, 3)])
    assert out.tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0]]
