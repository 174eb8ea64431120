"""JCA and LFAN at the reference sizes: shapes, parameter counts, and the spec's formulas.

Expected counts are rebuilt from the reference modules' layer lists (see
fusion/models/PARAMS.md), not read off our own modules.
"""

from __future__ import annotations

import math

import torch

from avemo.fusion.registry import MODELS, load_all
from avemo.fusion.spec import TaskSpec

load_all()


def _lin(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def _wn_conv(i: int, o: int, k: int) -> int:  # weight_norm(Conv1d): v + g + bias
    return i * o * k + o + o


def _tcn(i: int, channels: list[int], k: int = 5) -> int:
    total = 0
    for c in channels:
        total += _wn_conv(i, c, k) + _wn_conv(c, c, k) + (_lin(i, c) if i != c else 0)
        i = c
    return total


def _n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# models/cam.py (CAM): layer list of the reference
JCA_CORE = (
    2 * _lin(512, 128)
    + 2 * _lin(16, 16, False)
    + 2 * _lin(16, 32, False)
    + 2 * _lin(256, 32, False)
    + 2 * _lin(32, 16, False)
)
JCA_REFERENCE_HEADS = 2 * (_lin(640, 128) + _lin(128, 1))
JCA_DEFAULT_HEADS = 2 * (_lin(256, 128) + _lin(128, 1))

# model/model.py (my_2d1ddy) without the frozen IR-50 backbone
LFAN_USED = (
    _tcn(512, [128] * 4)
    + _tcn(128, [32] * 4)
    + _tcn(39, [32] * 4)
    + 3 * (_lin(128, 32) + _lin(32, 32) + _lin(32, 32))
    + 2 * 3 * 32
    + _lin(224, 1)
)
LFAN_UNUSED_GROUPNORMS = 2 * (2 * 32)

JCA_INPUTS = {"audio": (512,), "face": (512,)}
VA = TaskSpec("frame", 2)


def test_reference_numbers_match_params_md() -> None:
    assert JCA_CORE == 150_272
    assert JCA_CORE + JCA_REFERENCE_HEADS == 314_626
    assert JCA_CORE + JCA_DEFAULT_HEADS == 216_322
    assert LFAN_USED == 1_092_801
    assert LFAN_USED + LFAN_UNUSED_GROUPNORMS == 1_092_929


def test_jca_parameter_counts_and_shapes() -> None:
    model = MODELS.build("jca", inputs=JCA_INPUTS, task=VA)
    assert _n(model.core) == JCA_CORE
    assert _n(model) == JCA_CORE + JCA_DEFAULT_HEADS
    ref = MODELS.build("jca", inputs=JCA_INPUTS, task=VA, head="reference")
    assert _n(ref) == JCA_CORE + JCA_REFERENCE_HEADS
    batch = {"audio": torch.randn(4, 16, 512), "face": torch.randn(4, 16, 512)}
    assert model(batch).shape == (4, 16, 2) and ref(batch).shape == (4, 16, 2)
    att_a, att_v = model.core(batch["audio"], batch["face"], torch.ones(4, 16, dtype=torch.bool))
    assert att_a.shape == att_v.shape == (4, 16, 128)
    long = {"audio": torch.randn(2, 300, 512), "face": torch.randn(2, 300, 512)}
    assert model(long).shape == (2, 300, 2)  # 300-frame windows run as 19 chunks of L = 16


def test_jca_matches_spec_formula_on_one_sequence() -> None:
    torch.manual_seed(0)
    model = MODELS.build("jca", inputs=JCA_INPUTS, task=VA).eval()
    xa, xv = torch.randn(1, 16, 512), torch.randn(1, 16, 512)
    c = model.core
    a = xa[0] @ c.enc_a.weight.T + c.enc_a.bias  # L x 128
    v = xv[0] @ c.enc_v.weight.T + c.enc_v.bias
    j = torch.cat([a, v], 1)  # L x 256
    ca = torch.tanh(a.T @ c.w_ja.weight @ j / math.sqrt(256))  # 128 x 256
    cv = torch.tanh(v.T @ c.w_jv.weight @ j / math.sqrt(256))
    ha = torch.relu(ca @ c.w_ca.weight.T + a.T @ c.w_a.weight.T)  # 128 x 32
    hv = torch.relu(cv @ c.w_cv.weight.T + v.T @ c.w_v.weight.T)
    xatt_a = (ha @ c.w_ha.weight.T).T + a
    xatt_v = (hv @ c.w_hv.weight.T).T + v
    feats = torch.cat([xatt_a, xatt_v], 1)
    expected = torch.cat([h(feats) for h in model.heads], 1)
    got = model({"audio": xa, "face": xv})[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_lfan_parameter_count_and_shapes() -> None:
    inputs = {"face": (512,), "vggish": (128,), "mfcc": (39,)}
    model = MODELS.build("lfan", inputs=inputs, task=TaskSpec("frame", 1))
    assert _n(model) == LFAN_USED
    assert _n(model.tcns["face"]) == _tcn(512, [128] * 4)
    assert model.norm.normalized_shape == (3, 32)
    assert model.regressor.in_features == 128 + 3 * 32
    batch = {m: torch.randn(2, 300, *s) for m, s in inputs.items()}
    out = model(batch)
    assert out.shape == (2, 300, 1)
    assert set(model.attention) == set(inputs)
    assert all(a.shape == (2, 300) for a in model.attention.values())
    # the attention each modality receives sums (over modalities) to one per step
    total = sum(model.attention.values())
    torch.testing.assert_close(total, torch.ones(2, 300))


def test_lfan_released_attention_has_the_reference_parameter_count() -> None:
    # followers' query/value read the 32-d key (Linear(32, 32)); at the reference sizes the
    # follower TCNs are 32 wide too, so both forms have the reference's parameters
    inputs = {"face": (512,), "vggish": (128,), "mfcc": (39,)}
    model = MODELS.build("lfan", inputs=inputs, task=TaskSpec("frame", 1), attention="reference")
    assert _n(model) == LFAN_USED


def test_lfan_fusion_step_matches_spec_formula() -> None:
    torch.manual_seed(0)
    inputs = {"face": (6,), "vggish": (5,), "mfcc": (4,)}
    model = MODELS.build(
        "lfan",
        inputs=inputs,
        task=TaskSpec("frame", 1),
        visual_channels=[8],
        audio_channels=[4],
    ).eval()
    batch = {m: torch.randn(1, 7, *s) for m, s in inputs.items()}
    out = model(batch)
    mask = torch.ones(1, 7, dtype=torch.bool)
    order = ["face", "vggish", "mfcc"]
    h = {m: model.tcns[m](batch[m], mask).seq[0, 3] for m in order}  # time step 3
    k = torch.stack([model.key[m](h[m]) for m in order])
    q = torch.stack([model.query[m](h[m]) for m in order])
    v = torch.stack([model.value[m](h[m]) for m in order])
    a = torch.softmax(k @ q.T / math.sqrt(32), dim=-1)
    o = torch.nn.functional.layer_norm(a @ v + v, (3, 32), model.norm.weight, model.norm.bias)
    expected = model.regressor(torch.cat([h["face"], o.flatten()]))
    torch.testing.assert_close(out[0, 3], expected)


def test_lfan_any_number_of_followers() -> None:
    inputs = {"face": (8,), "a1": (5,), "a2": (4,), "a3": (3,)}
    model = MODELS.build(
        "lfan",
        inputs=inputs,
        task=TaskSpec("frame", 2),
        visual_channels=[8],
        audio_channels=[4],
    )
    assert model.norm.normalized_shape == (4, 32)
    out = model({m: torch.randn(2, 9, *s) for m, s in inputs.items()})
    assert out.shape == (2, 9, 2)
