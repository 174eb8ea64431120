"""The stage-two ``layer_weights`` encoder: SUPERB's softmax-weighted sum over cached layers."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from avemo.fusion import registry
from avemo.fusion.models.encoder_layer_weights import LayerWeightsEncoder
from avemo.fusion.optim import param_groups
from avemo.fusion.spec import TaskSpec

registry.load_all()


def batch(b: int = 3, t: int = 7, n_layers: int = 5, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, n_layers, d, generator=g) * torch.linspace(0.5, 4.0, n_layers)[:, None]
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 5:] = False
    return x, mask


def np_layer_norm(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_one_hot_weights_give_that_layer(layer_norm) -> None:
    x, mask = batch()
    for k in range(5):
        logits = [float("-inf")] * 5
        logits[k] = 0.0
        enc = LayerWeightsEncoder((5, 6), layer_norm=layer_norm, init=logits)
        y = enc(x, mask).seq
        want = x[:, :, k]
        if layer_norm:
            want = torch.nn.LayerNorm(6, elementwise_affine=False)(want)
        want = torch.where(mask[..., None], want, 0.0)
        assert torch.equal(y, want) if not layer_norm else torch.allclose(y, want, atol=1e-6)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_weighted_sum_matches_numpy(layer_norm) -> None:
    x, mask = batch(seed=1)
    logits = np.array([0.3, -1.0, 2.0, 0.0, 0.7], np.float32)
    enc = LayerWeightsEncoder((5, 6), layer_norm=layer_norm, init=logits)
    xs = x.numpy().astype(np.float64)
    if layer_norm:
        xs = np_layer_norm(xs)
    w = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    want = np.einsum("btld,l->btd", xs, w) * mask.numpy()[..., None]
    np.testing.assert_allclose(enc(x, mask).seq.detach().numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(enc.weights().detach().numpy(), w, rtol=1e-6)


def test_gradient_of_the_layer_logits_is_the_softmax_jacobian() -> None:
    x, mask = batch(seed=2)
    enc = LayerWeightsEncoder((5, 6), init=[0.1, 0.2, -0.3, 0.0, 0.5])
    g = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(3))
    (enc(x, mask).seq * g).sum().backward()
    w = enc.weights().detach()
    s = torch.einsum("btld,btd->l", torch.where(mask[..., None, None], x, 0.0), g)  # dL/dw_l
    want = w * (s - (w * s).sum())  # d softmax: diag(w) - w w^T
    torch.testing.assert_close(enc.logits.grad, want, rtol=1e-5, atol=1e-5)
    enc64 = LayerWeightsEncoder((5, 6), layer_norm=True, dim=4, activation="tanh").double()
    x64 = x.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: enc64(a, mask).seq, (x64,))


def test_masked_rows_cannot_leak(tmp_path) -> None:
    x, mask = batch(seed=4)
    enc = LayerWeightsEncoder((5, 6), layer_norm=True, dim=3)
    clean = enc(x, mask).seq
    x2 = x.clone().requires_grad_()
    with torch.no_grad():
        x2[~mask] = float("nan")
    out = enc(x2, mask).seq
    assert torch.equal(out, clean) and not out[~mask].any()
    out.sum().backward()
    assert torch.isfinite(enc.logits.grad).all() and torch.isfinite(x2.grad).all()


def test_layer_subset_and_bad_shapes() -> None:
    x, mask = batch()
    enc = LayerWeightsEncoder((5, 6), layers=[4, 1], init=[0.0, float("-inf")])
    assert torch.equal(enc(x, mask).seq, torch.where(mask[..., None], x[:, :, 4], 0.0))
    with pytest.raises(ValueError, match="rows \\[layers, dim\\]"):
        LayerWeightsEncoder((30,))
    with pytest.raises(ValueError, match="indices 0..4"):
        LayerWeightsEncoder((5, 6), layers=[5])


@pytest.mark.parametrize(
    "model,cfg",
    [
        (
            "zhou",
            {
                "encoder": {
                    "per_modality": {
                        "audio": {"name": "layer_weights", "layer_norm": True, "dim": 16}
                    }
                },
                "temporal": "fan_self",
                "fusion": "concat",
            },
        ),
        ("unimodal", {"modality": "audio", "encoder": {"name": "layer_weights", "dim": 8}}),
        ("late", {"encoder": {"per_modality": {"audio": "layer_weights"}}}),
        (
            "descriptors",
            {"descriptors": ["face"], "deep": {"audio": {"encoder": {"name": "layer_weights"}}}},
        ),
    ],
)
def test_every_branch_model_takes_it(model, cfg) -> None:
    from avemo.fusion.config import check_registered

    inputs = {"face": (8,), "audio": (5, 6)}
    check_registered(
        {
            "task": {"type": "clip"},
            "model": {"name": model, **cfg},
            "loss": {},
            "optim": {"name": "adam"},
            "schedule": {"name": "none"},
        }
    )
    net = registry.MODELS.build(model, inputs=inputs, task=TaskSpec("clip", 3), **cfg)
    x, mask = batch(b=4)
    out = net({"face": torch.randn(4, 7, 8), "audio": x, "audio_mask": mask})
    assert out.shape == (4, 3)
    out.sum().backward()
    enc = [m for m in net.modules() if isinstance(m, LayerWeightsEncoder)]
    assert len(enc) == 1 and enc[0].logits.grad is not None and enc[0].logits.grad.abs().sum() > 0


def test_training_finds_the_informative_layer(tmp_path) -> None:
    """Only layer 2 carries the class: the learnt weights move onto it (real store, real trainer)."""
    import pandas as pd
    from _fusion_data import CLASSES, write_set

    from avemo.data.store import ClipFeatures
    from avemo.fusion.train import train_from_config

    rng = np.random.default_rng(0)
    clips, rows = [], []
    for i in range(36):
        y, t = i % 3, int(rng.integers(10, 30))
        v = rng.normal(size=(t, 4, 6)).astype(np.float32) * [[1.0], [3.0], [1.0], [3.0]]
        v[:, 2, :2] += 1.5 * (y - 1)  # the class, in layer 2 only
        clips.append(
            ClipFeatures(f"c{i:02d}", v.astype(np.float16), np.arange(t) / 50.0, np.ones(t, bool))
        )
        rows.append(
            {
                "clip_id": f"c{i:02d}",
                "audio": "x.wav",
                "split": ("train", "train", "val")[i // 3 % 3],
                "subject": f"s{i % 4}",
                "label": CLASSES[y],
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    feats = write_set(tmp_path / "speech_wavlm.h5", "speech_wavlm", clips, 50.0)
    cfg = {
        "name": "lw",
        "seed": 0,
        "task": {"type": "clip"},
        "data": {
            "manifest": str(tmp_path / "m.csv"),
            "features": {"audio": str(feats)},
            "batch_size": 8,
        },
        "model": {
            "name": "unimodal",
            "modality": "audio",
            "encoder": {"name": "layer_weights", "dim": 8},
            "temporal": "mean",
        },
        "optim": {"name": "adam", "lr": 0.05},
        "trainer": {"max_epochs": 15, "accelerator": "cpu"},
        "output": {"dir": str(tmp_path / "runs"), "verbose": False},
    }
    res = train_from_config(cfg)
    state = torch.load(next((res["run_dir"] / "checkpoints").glob("*.pt")), weights_only=True)
    state = state.get("state_dict", state)
    (logits,) = [v for k, v in state.items() if k.endswith("encoder.logits")]
    w = torch.softmax(logits.float(), 0)
    assert int(w.argmax()) == 2 and w[2] > 0.4, w  # from 0.25 each


CONFIGS = Path(__file__).resolve().parents[1] / "workflows" / "configs"


def documented_ssl_runs() -> list[tuple[Path, list[str]]]:
    """``# SSL: avemo fuse-train -c NAME OVERRIDES...`` lines of the packaged configs."""
    out = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        for line in path.read_text().splitlines():
            if line.startswith("# SSL: avemo fuse-train -c "):
                argv = shlex.split(line.removeprefix("# SSL: "))
                assert argv[2:4] == ["-c", path.stem], line
                out.append((path, argv[4:]))
    return out


def test_speech_emotion_documents_an_ssl_run() -> None:
    assert "speech_emotion" in {p.stem for p, _ in documented_ssl_runs()}


@pytest.mark.parametrize(
    "path,overrides", documented_ssl_runs(), ids=lambda v: getattr(v, "stem", "")
)
def test_documented_ssl_override_builds_and_trains_the_weights(path, overrides) -> None:
    """The command a config's comment gives resolves, and its model weights the cached layers."""
    from avemo.fusion.config import check_registered, load_config

    cfg = load_config(path, overrides)
    check_registered(cfg)
    feats = cfg.data.features
    inputs = {
        m: (5, 16) if "speech_w" in str(p) or "speech_h" in str(p) else (8,)
        for m, p in feats.items()
    }
    frame = cfg.task.type == "frame"
    task = TaskSpec("frame", 2) if frame else TaskSpec("clip", 4)
    net = registry.MODELS.build(cfg.model.name, inputs=inputs, task=task, **cfg.model.options())
    torch.manual_seed(0)
    b = {m: torch.randn(2, 32, *s) for m, s in inputs.items()}
    net(b).sum().backward()
    if cfg.optim.groups:  # each prefix names a module of this model (else exit 2 at fit time)
        assert len(param_groups(net, cfg.optim.groups)) == len(cfg.optim.groups) + 1
    enc = [m for m in net.modules() if isinstance(m, LayerWeightsEncoder)]
    assert enc and all(e.logits.grad.abs().sum() > 0 for e in enc)


@pytest.mark.parametrize("model,kw", [("jca", {}), ("lfan", {"audio": ["audio"]})])
def test_jca_and_lfan_audio_encoder_one_hot_equals_that_layer_alone(model, kw) -> None:
    """``audio_encoder: layer_weights`` with one-hot weights is the model fed that one layer."""
    torch.manual_seed(0)
    x, face, k = torch.randn(2, 40, 5, 16), torch.randn(2, 40, 8), 3
    logits = [float("-inf")] * 5
    logits[k] = 0.0
    task = TaskSpec("frame", 2)
    enc = {"name": "layer_weights", "init": logits}
    a = registry.MODELS.build(
        model, inputs={"face": (8,), "audio": (5, 16)}, task=task, audio_encoder=enc, **kw
    ).eval()
    b = registry.MODELS.build(model, inputs={"face": (8,), "audio": (16,)}, task=task, **kw).eval()
    b.load_state_dict({n: v for n, v in a.state_dict().items() if "logits" not in n})
    ya, yb = a({"face": face, "audio": x}), b({"face": face, "audio": x[:, :, k]})
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
