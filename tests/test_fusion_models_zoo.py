"""Every stage-two model and temporal module: shapes, forward/backward with padding, masks.

Mask rule under test: values at invalid rows (even NaN) change nothing, and appending padded
rows changes nothing (outputs at valid frames for frame tasks, logits for clip tasks).
"""

from __future__ import annotations

import pytest
import torch
from _tutorial import load_tutorial_plugin

from avemo.fusion.models.base import TemporalOutput
from avemo.fusion.registry import ENCODERS, FUSION, MODELS, TEMPORAL, load_all
from avemo.fusion.spec import TaskSpec

load_all()

B = 3
LENGTHS = [12, 7, 1]  # one sequence with a single valid row


def _mask(t: int, lengths: list[int] = LENGTHS, hole: bool = True) -> torch.Tensor:
    m = torch.zeros(len(lengths), t, dtype=torch.bool)
    for i, n in enumerate(lengths):
        m[i, :n] = True
    if hole:  # an invalid row in the middle (e.g. no face found in that frame)
        m[0, 3] = False
    return m


def _batch(inputs: dict[str, tuple[int, ...]], t: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch: dict[str, torch.Tensor] = {}
    for name, shape in inputs.items():
        batch[name] = torch.randn(B, t, *shape, generator=g)
        batch[f"{name}_mask"] = _mask(t)
    return batch


def _garbage(batch: dict[str, torch.Tensor], value: float) -> dict[str, torch.Tensor]:
    out = dict(batch)
    for k, v in batch.items():
        if not k.endswith("_mask"):
            m = batch[f"{k}_mask"].reshape(B, -1, *([1] * (v.dim() - 2)))
            out[k] = torch.where(m, v, torch.full_like(v, value))
    return out


def _pad(batch: dict[str, torch.Tensor], extra: int) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in batch.items():
        fill = torch.zeros if k.endswith("_mask") else torch.randn
        tail = fill(v.shape[0], extra, *v.shape[2:], dtype=v.dtype) * (
            1 if k.endswith("_mask") else 50
        )
        out[k] = torch.cat([v, tail.to(v.dtype)], dim=1)
    return out


SMALL_TCN = {"name": "tcn", "channels": [8, 8], "kernel": 3}
AUDIO_CNN = {"name": "audio_cnn", "channels": [4, 8], "pool_time": [2, 2], "pool_freq": [2, 2]}
CLIP7 = TaskSpec("clip", 7)
FRAME2 = TaskSpec("frame", 2)

TEMPORALS = [
    "mean",
    "max",
    "stats",
    "fan_self",
    "fan_relation",
    "transformer",
    SMALL_TCN,
    {"name": "bilstm", "hidden": 6, "layers": 2},
]

# (id, model name, inputs, task, config)
CASES = [
    *[
        (
            f"unimodal-{t if isinstance(t, str) else t['name']}",
            "unimodal",
            {"face": (10,)},
            CLIP7,
            {"temporal": t},
        )
        for t in TEMPORALS
    ],
    *[
        (
            f"unimodal-frame-{t if isinstance(t, str) else t['name']}",
            "unimodal",
            {"face": (10,)},
            FRAME2,
            {"temporal": t, "encoder": {"name": "linear", "dim": 8}},
        )
        for t in TEMPORALS
    ],
    (
        "unimodal-audiocnn-clip",
        "unimodal",
        {"logmel": (16,)},
        CLIP7,
        {"encoder": AUDIO_CNN, "temporal": "fan_self"},
    ),
    (
        "unimodal-audiocnn-frame",
        "unimodal",
        {"logmel": (3, 16)},
        FRAME2,
        {"encoder": {**AUDIO_CNN, "freq_reduce": "flatten"}, "temporal": "mean"},
    ),
    (
        "unimodal-mlp",
        "unimodal",
        {"face": (10,)},
        CLIP7,
        {"encoder": {"name": "mlp", "hidden": [12, 8]}, "head": {"hidden": [8], "dropout": 0.2}},
    ),
    (
        "zhou-fbp-relation",
        "zhou",
        {"face": (10,), "logmel": (16,)},
        CLIP7,
        {
            "visual": "face",
            "audio": ["logmel"],
            "temporal": "fan_relation",
            "encoder": {"name": "identity", "per_modality": {"logmel": AUDIO_CNN}},
            "fusion": {"name": "fbp", "k": 3, "o": 12},
        },
    ),
    (
        "zhou-concat-transformer",
        "zhou",
        {"face": (10,), "mfcc": (6,), "vggish": (8,)},
        CLIP7,
        {"visual": "face", "temporal": "transformer", "fusion": {"name": "concat", "dropout": 0.1}},
    ),
    (
        "zhou-frame-tcn-fbp",
        "zhou",
        {"face": (10,), "mfcc": (6,)},
        FRAME2,
        {"temporal": SMALL_TCN, "fusion": {"name": "fbp", "k": 2, "o": 8}},
    ),
    (
        "attention_fbp",
        "attention_fbp",
        {"face": (10,), "spec": (16,)},
        CLIP7,
        {
            "audio": "spec",
            "audio_encoder": AUDIO_CNN,
            "att_dim": 6,
            "fusion": {"name": "fbp", "k": 3, "o": 10},
        },
    ),
    (
        "attention_fbp-vector-audio",
        "attention_fbp",
        {"face": (10,), "vggish": (8,)},
        CLIP7,
        {"audio_encoder": "identity", "lam": 2.0, "fusion": {"name": "fbp", "k": 2, "o": 6}},
    ),
    (
        "jca-frame",
        "jca",
        {"audio": (12,), "face": (10,)},
        FRAME2,
        {"seq_len": 5, "proj_dim": 6, "hidden": 4, "head_hidden": 8},
    ),
    (
        "jca-frame-reference-head",
        "jca",
        {"audio": (12,), "face": (10,)},
        FRAME2,
        {"seq_len": 4, "proj_dim": 6, "hidden": 4, "head": "reference"},
    ),
    (
        "jca-clip",
        "jca",
        {"audio": (12,), "face": (10,)},
        CLIP7,
        {"seq_len": 6, "proj_dim": 6, "hidden": 4},
    ),
    (
        "lfan-frame",
        "lfan",
        {"face": (10,), "vggish": (8,), "mfcc": (6,)},
        FRAME2,
        {"visual_channels": [8, 8], "audio_channels": [4, 4], "kernel": 3, "att_dim": 5},
    ),
    (
        "lfan-clip-one-follower",
        "lfan",
        {"face": (10,), "mfcc": (6,)},
        CLIP7,
        {"visual_channels": [8], "audio_channels": [4], "att_dim": 4, "tcn_init": "reference"},
    ),
    ("late-mean", "late", {"face": (10,), "mfcc": (6,)}, CLIP7, {"temporal": "fan_self"}),
    (
        "late-learned-probs",
        "late",
        {"face": (10,), "mfcc": (6,)},
        CLIP7,
        {"combine": "learned", "on": "probs", "temporal": "max"},
    ),
    ("late-frame", "late", {"face": (10,), "mfcc": (6,)}, FRAME2, {"temporal": SMALL_TCN}),
]


def _build(name, inputs, task, cfg, seed: int = 0):
    torch.manual_seed(seed)
    return MODELS.build(name, inputs=inputs, task=task, **cfg)


def _valid_out(model, batch, task):
    out = model(batch)
    if task.level == "frame":
        m = next(batch[k] for k in batch if k.endswith("_mask"))
        return out[m]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_model_shapes_backward_and_masks(case) -> None:
    _, name, inputs, task, cfg = case
    model = _build(name, inputs, task, cfg)
    t = 12
    batch = _batch(inputs, t)

    # forward/backward in training mode, padding and a hole in the mask included
    model.train()
    out = model(batch)
    expected = (B, task.n_out) if task.level == "clip" else (B, t, task.n_out)
    assert out.shape == expected
    m = batch[next(k for k in batch if k.endswith("_mask"))]
    loss = (out[m] if task.level == "frame" else out).pow(2).mean()
    loss.backward()
    # The released JCA head reads only the visual side, so the audio attention output is
    # unused there (as in the reference code).
    unused = {"core.w_ja.weight", "core.w_ca.weight", "core.w_a.weight", "core.w_ha.weight"}
    unused = unused if cfg.get("head") == "reference" else set()
    named = {n: p.grad for n, p in model.named_parameters() if n not in unused}
    bad = [n for n, g in named.items() if g is None or not torch.isfinite(g).all()]
    assert not bad, f"missing/NaN gradients: {bad}"
    grads = list(named.values())
    assert any(g.abs().sum() > 0 for g in grads)
    for k, a in model.attention.items():
        assert a.shape[0] == B and a.dim() == 2 and torch.isfinite(a).all(), k

    # mask rule, in eval mode (dropout off)
    model.eval()
    with torch.no_grad():
        ref = _valid_out(model, batch, task)
        assert torch.isfinite(ref).all()
        for value in (1e3, float("nan")):
            torch.testing.assert_close(_valid_out(model, _garbage(batch, value), task), ref)
        padded = _pad(batch, 5)
        out_p = model(padded)
        if task.level == "frame":
            out_p = out_p[:, :t][m]
        torch.testing.assert_close(out_p, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", TEMPORALS, ids=lambda c: c if isinstance(c, str) else c["name"])
def test_temporal_modules_mask_and_empty_sequence(cfg) -> None:
    name, kw = (
        (cfg, {})
        if isinstance(cfg, str)
        else (cfg["name"], {k: v for k, v in cfg.items() if k != "name"})
    )
    torch.manual_seed(0)
    mod = TEMPORAL.build(name, 5, **kw).eval()
    x = torch.randn(2, 9, 5)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1] = False  # a sequence with no valid row at all (modality missing)
    out = mod(x, mask)
    assert isinstance(out, TemporalOutput)
    assert out.seq.shape == (2, 9, mod.out_dim) and out.pooled.shape == (2, mod.out_dim)
    assert torch.isfinite(out.pooled).all() and torch.isfinite(out.seq).all()
    assert torch.equal(out.pooled[1], torch.zeros(mod.out_dim))
    if out.attention is not None:  # weights over valid frames sum to one
        torch.testing.assert_close(out.attention[0].sum(), torch.tensor(1.0))


def test_mean_and_max_pool_values() -> None:
    x = torch.tensor([[[1.0], [3.0], [-50.0]]])
    mask = torch.tensor([[True, True, False]])
    assert TEMPORAL.build("mean", 1)(x, mask).pooled.item() == 2.0
    assert TEMPORAL.build("max", 1)(x, mask).pooled.item() == 3.0


def test_fan_self_attention_formula() -> None:
    torch.manual_seed(1)
    mod = TEMPORAL.build("fan_self", 4).eval()
    x, mask = torch.randn(1, 6, 4), torch.tensor([[True] * 4 + [False] * 2])
    out = mod(x, mask)
    alpha = torch.sigmoid(x[0, :4] @ mod.att.score.weight[0] + mod.att.score.bias)
    expected = (alpha[:, None] * x[0, :4]).sum(0) / alpha.sum()
    torch.testing.assert_close(out.pooled[0], expected)


def test_fan_relation_attention_formula() -> None:
    torch.manual_seed(2)
    mod = TEMPORAL.build("fan_relation", 3).eval()
    x = torch.randn(1, 5, 3)
    out = mod(x, torch.ones(1, 5, dtype=torch.bool))
    f = x[0]
    alpha = torch.sigmoid(f @ mod.att.score.weight[0] + mod.att.score.bias)
    fp = (alpha[:, None] * f).sum(0) / alpha.sum()
    pair = torch.cat([f, fp.expand(5, 3)], 1)
    beta = torch.sigmoid(pair @ mod.rel.weight[0] + mod.rel.bias)
    expected = ((alpha * beta)[:, None] * pair).sum(0) / (alpha * beta).sum()
    assert out.pooled.shape == (1, 6)
    torch.testing.assert_close(out.pooled[0], expected)


def test_tcn_is_causal_weight_normed_and_xavier() -> None:
    torch.manual_seed(0)
    tcn = TEMPORAL.build("tcn", 4, channels=[6, 6, 6], kernel=5).eval()
    x = torch.randn(1, 30, 4)
    mask = torch.ones(1, 30, dtype=torch.bool)
    y1 = tcn(x, mask).seq
    x2 = x.clone()
    x2[0, 20:] = torch.randn(10, 4)
    y2 = tcn(x2, mask).seq
    torch.testing.assert_close(y1[0, :20], y2[0, :20])  # the future never leaks back
    assert not torch.allclose(y1[0, 20:], y2[0, 20:])
    block = tcn.blocks[1]
    conv = block.conv1.conv
    assert hasattr(conv, "parametrizations") and conv.dilation == (2,)
    # xavier default: the effective weight is the xavier draw (g = ||v||), bound sqrt(2)*sqrt(6/fan)
    fan = conv.in_channels * 5 + conv.out_channels * 5
    bound = (2**0.5) * (6 / fan) ** 0.5
    assert conv.weight.abs().max() <= bound + 1e-6
    torch.testing.assert_close(conv.weight, conv.parametrizations.weight.original1)


def test_audio_cnn_cells_and_downsampled_mask() -> None:
    enc = ENCODERS.build("audio_cnn", (2, 16), channels=[4, 8], pool_time=[2, 2], pool_freq=[2, 2])
    x = torch.randn(2, 13, 2, 16)
    mask = torch.zeros(2, 13, dtype=torch.bool)
    mask[0, :13], mask[1, :5] = True, True
    out = enc(x, mask)
    assert out.seq.shape == (2, 4, 8) and out.mask.tolist() == [
        [True] * 4,
        [True, True, False, False],
    ]
    assert out.cells.shape == (2, 4 * 4, 8) and out.cells_mask.sum(1).tolist() == [16, 8]


def test_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="not among the inputs"):
        MODELS.build("zhou", inputs={"face": (4,), "mfcc": (3,)}, task=CLIP7, audio=["logmel"])
    with pytest.raises(ValueError, match="task type"):
        MODELS.build("unimodal", inputs={"face": (4,)}, task=TaskSpec("seq", 2))
    with pytest.raises(ValueError, match="task must be a TaskSpec"):  # not a dict's short form
        MODELS.build("unimodal", inputs={"face": (4,)}, task={"type": "clip", "n_out": 2})
    with pytest.raises(ValueError, match="exactly two"):
        MODELS.build(
            "zhou", inputs={"face": (4,), "a": (3,)}, task=CLIP7, fusion="fbp"
        ).fusion.__class__([1, 2, 3])
    with pytest.raises(KeyError, match="unknown temporal module"):
        MODELS.build("unimodal", inputs={"face": (4,)}, task=CLIP7, temporal="lstm9")
    with pytest.raises(ValueError, match="clip tasks"):
        MODELS.build("attention_fbp", inputs={"face": (4,), "a": (3,)}, task=FRAME2)
    model = MODELS.build("unimodal", inputs={"face": (4,)}, task=CLIP7)
    with pytest.raises(KeyError, match="lacks modalities"):
        model({"audio": torch.zeros(1, 2, 4)})


@pytest.mark.parametrize(
    "name,cfg",
    [
        ("zhou", {"temporal": "fan_relation"}),
        ("late", {}),
        ("lfan", {"visual_channels": [8], "audio_channels": [4]}),
        ("jca", {"audio": "mfcc", "seq_len": 4, "proj_dim": 6, "hidden": 4}),
        ("zhou", {"temporal": "mean", "fusion": "fbp"}),
    ],
)
def test_missing_modality_is_ignored_not_read(name, cfg) -> None:
    """A modality masked out for a whole clip (no audio track): the output is finite, does not
    depend on that modality's values at all (1e3 or NaN give the same logits), still depends on
    the present one, and differs from the output with the modality present."""
    inputs = {"face": (10,), "mfcc": (6,)}
    full = _batch(inputs, 8)
    batch = {**full, "mfcc_mask": torch.zeros(B, 8, dtype=torch.bool)}
    model = _build(name, inputs, CLIP7, cfg).eval()
    with torch.no_grad():
        out = model(batch)
        assert torch.isfinite(out).all()
        for value in (1e3, float("nan")):
            other = {**batch, "mfcc": torch.full_like(batch["mfcc"], value)}
            torch.testing.assert_close(model(other), out, rtol=0, atol=0)
        moved = {**batch, "face": _batch(inputs, 8, seed=1)["face"]}  # other face rows
        # (jca too: a clip with no row holding both streams is attended over the one it has)
        assert not torch.allclose(model(moved), out), "the present modality is not read"
        assert not torch.allclose(model(full), out), "the missing modality changes nothing"


def test_all_registered_models_are_listed() -> None:
    assert {"unimodal", "zhou", "attention_fbp", "jca", "lfan", "late"} <= set(MODELS.names())
    assert set(TEMPORAL.names()) >= {
        "mean",
        "max",
        "fan_self",
        "fan_relation",
        "transformer",
        "tcn",
        "bilstm",
    }


# ----------------------------------------------------------------------------- every registered module
# Parametrised over the registries: a model, temporal module, encoder or fusion registered later
# (built-in or through an entry point) is tested here with its defaults, no test edit needed.

REGISTRY_INPUTS = ({"face": (10,), "audio": (16,)}, {"face": (10,)})


def _default_model(name: str, task: dict):
    """Build with defaults on two modalities, else on one; a refusal must be a clear ValueError."""
    errors = []
    for inputs in REGISTRY_INPUTS:
        try:
            return _build(name, inputs, task, {}), inputs
        except ValueError as e:
            errors.append(str(e))
    return None, errors


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_builds_with_defaults_and_keeps_the_mask_rule(name) -> None:
    check_model_with_defaults(name)


def test_the_tutorials_model_is_one_file(tmp_path, monkeypatch) -> None:
    """docs/tutorials/extending.md's `gated_mean`, loaded from one file with no other edit,
    passes the checks every registered model passes (and refuses the frame task, naming it)."""
    load_tutorial_plugin('register("gated_mean")', MODELS, tmp_path, monkeypatch)
    check_model_with_defaults("gated_mean")
    assert _default_model("gated_mean", FRAME2)[0] is None  # clip tasks only, as documented


def check_model_with_defaults(name: str) -> None:
    built = 0
    for task in (CLIP7, FRAME2):
        model, inputs = _default_model(name, task)
        if model is None:
            assert all(name in e or task.level in e for e in inputs), (
                inputs
            )  # names itself/the task
            continue
        built += 1
        t = 12
        batch = _batch(inputs, t)
        out = model(batch)
        want = (B, t, task.n_out) if task.level == "frame" else (B, task.n_out)
        assert tuple(out.shape) == want and torch.isfinite(out).all()
        out.float().pow(2).mean().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        model.eval()
        with torch.no_grad():
            ref = _valid_out(model, batch, task)
            torch.testing.assert_close(_valid_out(model, _garbage(batch, float("nan")), task), ref)
    assert built, f"model {name!r} builds for neither a clip nor a frame task with its defaults"


@pytest.mark.parametrize("name", TEMPORAL.names())
def test_every_registered_temporal_module_with_defaults(name) -> None:
    mod = TEMPORAL.build(name, 10).eval()
    x, m = torch.randn(B, 9, 10), _mask(9, [9, 4, 1])
    out = mod(x, m)
    assert out.seq.shape[:2] == (B, 9) and out.pooled.shape == (B, mod.out_dim)
    with torch.no_grad():
        again = mod(torch.where(m[..., None], x, torch.full_like(x, 1e3)), m)
    torch.testing.assert_close(again.pooled, out.pooled)


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_registered_encoder_with_defaults(name) -> None:
    rows = tuple(getattr(ENCODERS.get(name), "example_rows", (16,)))  # e.g. [layers, dim] rows
    enc = ENCODERS.build(name, rows).eval()
    x, m = torch.randn(B, 9, *rows), _mask(9, [9, 4, 1])
    out = enc(x, m)
    assert (
        out.seq.shape[0] == B
        and out.seq.shape[-1] == enc.out_dim
        and out.mask.shape == out.seq.shape[:2]
    )
    assert torch.isfinite(out.seq).all()


@pytest.mark.parametrize("name", FUSION.names())
def test_every_registered_fusion_with_defaults(name) -> None:
    f = FUSION.build(name, [6, 8])
    out = f([torch.randn(B, 6), torch.randn(B, 8)])
    assert out.shape == (B, f.out_dim) and torch.isfinite(out).all()


#: the file-name prefix of each registry's entries in fusion/models (``models/__init__.py``)
ROLE_PREFIX = {
    "MODELS": "model_",
    "TEMPORAL": "temporal_",
    "ENCODERS": "encoder_",
    "FUSION": "fusion_",
}
SHARED_PARTS = {"__init__", "base", "branch", "dropout"}


def test_model_files_are_named_by_their_role_and_all_discovered() -> None:
    """Every file of fusion/models is a shared part or ``<role>_<name>.py``; every built-in
    entry of a registry lives in a file of its role (a full model may register a module only it
    uses); ``load_all`` discovers each file (its entries are registered)."""
    from pathlib import Path

    import avemo.fusion.models as pkg

    stems = {p.stem for p in Path(pkg.__file__).parent.glob("*.py")} - SHARED_PARTS
    assert stems and all(s.startswith(tuple(ROLE_PREFIX.values())) for s in stems), sorted(stems)
    seen = set()
    for reg_name, reg in {
        "MODELS": MODELS,
        "TEMPORAL": TEMPORAL,
        "ENCODERS": ENCODERS,
        "FUSION": FUSION,
    }.items():
        for key in reg.names():
            module = reg.get(key).__module__
            if not module.startswith("avemo.fusion.models."):
                continue  # a plugin's
            stem = module.rsplit(".", 1)[1]
            seen.add(stem)
            assert stem.startswith((ROLE_PREFIX[reg_name], "model_")), (reg_name, key, module)
    assert seen == stems
