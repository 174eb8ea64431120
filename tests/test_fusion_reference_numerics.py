"""JCA, LFAN and the TCN reproduce the released reference forward passes with the same weights.

The fixtures were written once by running the reference modules (praveena2j's ``CAM``,
sucv/ABAW2's ``my_2d1ddy`` and ``TemporalConvNet``) from their repositories; see
``tests/fixtures/make_reference_fusion.py`` for the commits, sizes and how to remake them.
Weights are copied in through the models' ``state_from_reference`` name mappings with
``strict=True``, so every parameter of ours comes from the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avemo.fusion.models.temporal_tcn import TCN, tcn_state_from_reference
from avemo.fusion.registry import MODELS, load_all
from avemo.fusion.spec import TaskSpec

load_all()
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOL = {"rtol": 0.0, "atol": 1e-5}


def _fixture(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(parameters by reference name, inputs/outputs) of one reference fixture."""
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as z:
        arrays = {k: torch.from_numpy(z[k]) for k in z.files if not k.startswith("meta.")}
    state = {k[len("param.") :]: v for k, v in arrays.items() if k.startswith("param.")}
    data = {k: v for k, v in arrays.items() if not k.startswith("param.")}
    return state, data


def _levels(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    n = 0
    while f"{prefix}network.{n}.conv1.bias" in state:
        n += 1
    return [state[f"{prefix}network.{i}.conv1.bias"].shape[0] for i in range(n)]


# --- TCN -------------------------------------------------------------------------------------


def _tcn() -> tuple[TCN, dict[str, torch.Tensor]]:
    state, data = _fixture("ref_tcn")
    c_in, kernel = state["network.0.conv1.weight_v"].shape[1:]
    tcn = TCN(c_in, _levels(state, ""), kernel=kernel, dropout=0.1, causal=True).eval()
    tcn.load_state_dict(tcn_state_from_reference(state), strict=True)
    return tcn, data


def test_tcn_equals_reference_temporal_conv_net() -> None:
    tcn, data = _tcn()
    assert any(b.downsample is None for b in tcn.blocks) and any(
        b.downsample is not None for b in tcn.blocks
    )
    x = data["in.x"].transpose(1, 2)  # reference layout [B, C, T] -> ours [B, T, C]
    with torch.no_grad():
        got = tcn(x, torch.ones(x.shape[:2], dtype=torch.bool)).seq
    torch.testing.assert_close(got, data["out.y"].transpose(1, 2), **TOL)


def test_tcn_appended_invalid_rows_leave_the_reference_outputs() -> None:
    tcn, data = _tcn()
    x = data["in.x"].transpose(1, 2)
    b, t, c = x.shape
    padded = torch.cat([x, torch.full((b, 7, c), 1e3)], dim=1)
    mask = torch.arange(t + 7) < t
    with torch.no_grad():
        got = tcn(padded, mask.expand(b, -1)).seq[:, :t]
    torch.testing.assert_close(got, data["out.y"].transpose(1, 2), **TOL)


# --- JCA -------------------------------------------------------------------------------------


def _jca(head: str):
    state, data = _fixture("ref_jca_cam")
    inputs = {
        "audio": tuple(data["in.audio"].shape[2:]),
        "face": tuple(data["in.visual"].shape[2:]),
    }
    model = MODELS.build(
        "jca",
        inputs=inputs,
        task=TaskSpec("frame", 2),
        head=head,
        seq_len=state["affine_a.weight"].shape[0],
        proj_dim=state["encoder1.weight"].shape[0],
        hidden=state["W_a.weight"].shape[0],
        head_hidden=state["vregressor.0.weight"].shape[0],
    ).eval()
    return model, state, data


def test_jca_reference_head_equals_released_cam() -> None:
    model, state, data = _jca("reference")
    model.load_state_dict(model.state_from_reference(state), strict=True)
    want = torch.cat([data["out.valence"], data["out.arousal"]], dim=-1)
    with torch.no_grad():
        got = model({"audio": data["in.audio"], "face": data["in.visual"]})
    torch.testing.assert_close(got, want, **TOL)
    # two reference sequences back to back form one timeline of 2 L rows: cut into the same chunks
    n, length = want.shape[:2]
    joined = {
        "audio": data["in.audio"].reshape(n // 2, 2 * length, -1),
        "face": data["in.visual"].reshape(n // 2, 2 * length, -1),
    }
    with torch.no_grad():
        got = model(joined)
    torch.testing.assert_close(got, want.reshape(n // 2, 2 * length, 2), **TOL)


def test_jca_core_gives_the_released_attended_features_to_the_default_head() -> None:
    model, state, data = _jca("default")
    core = {
        k[len("core.") :]: v
        for k, v in model.state_from_reference(state).items()
        if k.startswith("core.")
    }
    model.core.load_state_dict(core, strict=True)
    xa, xv = data["in.audio"], data["in.visual"]
    with torch.no_grad():
        att_a, att_v = model.core(xa, xv, torch.ones(xa.shape[:2], dtype=torch.bool))
    torch.testing.assert_close(att_a, data["out.att_audio"], **TOL)
    torch.testing.assert_close(att_v, data["out.att_visual"], **TOL)
    seen = []
    hook = model.heads[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        model({"audio": xa, "face": xv})
    hook.remove()
    want = torch.cat([data["out.att_audio"], data["out.att_visual"]], dim=-1)
    torch.testing.assert_close(seen[0], want, **TOL)


# --- LFAN ------------------------------------------------------------------------------------


def _lfan(attention: str = "reference"):
    state, data = _fixture("ref_lfan_my_2d1ddy")
    inputs = {
        "face": tuple(data["in.visual"].shape[2:]),
        "vggish": tuple(data["in.follower1"].shape[2:]),
        "mfcc": tuple(data["in.follower2"].shape[2:]),
    }
    model = MODELS.build(
        "lfan",
        inputs=inputs,
        task=TaskSpec("frame", 1),
        audio=["vggish", "mfcc"],
        attention=attention,
        visual_channels=_levels(state, "temporal."),
        audio_channels=_levels(state, "temporal1."),
        kernel=state["temporal.network.0.conv1.weight_v"].shape[-1],
        att_dim=state["encoder1.weight"].shape[0],
    ).eval()
    batch = {
        "face": data["in.visual"],
        "vggish": data["in.follower1"],
        "mfcc": data["in.follower2"],
    }
    return model, state, batch, data["out.y"]


def test_lfan_reference_attention_equals_released_my_2d1ddy() -> None:
    model, state, batch, want = _lfan()
    mapped = model.state_from_reference(state)
    assert not {k for k in state if k.startswith(("gn1.", "gn2."))} & set(
        mapped
    )  # unused in forward
    model.load_state_dict(mapped, strict=True)
    with torch.no_grad():
        got = model(batch)
    torch.testing.assert_close(got, want, **TOL)
    # followers' query/value read the 32-d key projection, as in the released forward
    assert model.query["vggish"].in_features == model.value["mfcc"].in_features == model.att_dim
    assert model.query["face"].in_features == model.tcns["face"].out_dim


def test_lfan_reference_attention_ignores_appended_invalid_rows() -> None:
    model, state, batch, want = _lfan()
    model.load_state_dict(model.state_from_reference(state), strict=True)
    b, t = want.shape[:2]
    padded = {}
    for m, x in list(batch.items()):
        padded[m] = torch.cat([x, torch.full((b, 5, x.shape[-1]), float("nan"))], dim=1)
        padded[f"{m}_mask"] = (torch.arange(t + 5) < t).expand(b, -1)
    with torch.no_grad():
        got = model(padded)[:, :t]
    torch.testing.assert_close(got, want, **TOL)


def test_lfan_attention_form_is_checked() -> None:
    inputs = {"face": (6,), "mfcc": (4,)}
    with pytest.raises(ValueError, match="lfan attention must be one of"):
        MODELS.build("lfan", inputs=inputs, task=TaskSpec("frame", 1), attention="released")
