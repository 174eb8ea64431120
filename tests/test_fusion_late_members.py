"""``descriptors``' ``late`` members (late fusion trained in one run): held to their definition,
two separately built ``descriptors`` models -- the combined output's probabilities are the mean of
the two models' probabilities, and one training step gives each member exactly the gradient of its
own cross-entropy (scaled by 1 / M), as if it were trained alone. Config mistakes name the key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from _fusion_data import clip_config, clip_corpus, quiet_run_config

from avemo.cli import main
from avemo.fusion.config import ConfigError
from avemo.fusion.datamodule import CachedFeatureDataModule
from avemo.fusion.module import FusionModule
from avemo.fusion.registry import MODELS, load_all
from avemo.fusion.spec import TaskSpec
from avemo.fusion.stacked import why_not_stackable
from avemo.fusion.train import build_model, train_from_config

load_all()

INPUTS = {"lld": (6,), "pitch": (2,), "func": (9,)}
TASK = TaskSpec("clip", 3, classes=("a", "b", "c"))


def _batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "lld": torch.randn(n, 12, 6, generator=g),
        "lld_mask": torch.rand(n, 12, generator=g) > 0.2,
        "pitch": torch.randn(n, 7, 2, generator=g),
        "func": torch.randn(n, 1, 9, generator=g),
        "y": torch.randint(0, 3, (n,), generator=g),
    }


def _pair(dropout: float = 0.0):
    """The late-fusion model and the two plain ``descriptors`` models it is made of (weights
    copied in), each built by the registry as a user's config would build it."""
    late = MODELS.build(
        "descriptors",
        inputs=INPUTS,
        task=TASK,
        per_modality_stats={"func": ["mean"]},
        dropout=dropout,
        late={"functionals": ["func"]},
    )
    main_only = MODELS.build(
        "descriptors", inputs=INPUTS, task=TASK, descriptors=["lld", "pitch"], dropout=dropout
    )
    func_only = MODELS.build(
        "descriptors",
        inputs=INPUTS,
        task=TASK,
        descriptors=["func"],
        per_modality_stats={"func": ["mean"]},
        dropout=dropout,
    )
    torch.manual_seed(1)
    for p in late.parameters():
        torch.nn.init.normal_(p)
    main_only.streams.load_state_dict(late.streams.state_dict())
    main_only.head.load_state_dict(late.head.state_dict())
    func_only.load_state_dict(late.late["functionals"].state_dict())
    return late, main_only, func_only


def test_late_member_probabilities_are_the_mean_of_the_separate_models() -> None:
    late, main_only, func_only = _pair()
    batch = _batch()
    for m in (late, main_only, func_only):  # standardisation statistics from one training pass
        m.train()(batch)
        m.eval()
    with torch.no_grad():
        got = late(batch).softmax(-1)
        want = (main_only(batch).softmax(-1) + func_only(batch).softmax(-1)) / 2
    torch.testing.assert_close(got, want)
    assert late.member_outputs == []  # nothing kept outside training
    assert late.has_members and not main_only.has_members


def test_each_member_gets_the_gradient_of_its_own_loss() -> None:
    late, main_only, func_only = _pair()
    batch = _batch()
    late.train(), main_only.train(), func_only.train()
    out = late(batch)
    assert len(late.member_outputs) == 2
    loss = torch.stack([F.cross_entropy(o, batch["y"]) for o in late.member_outputs]).mean()
    loss.backward()
    for alone in (main_only, func_only):
        F.cross_entropy(alone(batch), batch["y"]).backward()
    torch.testing.assert_close(
        late.head.net[-1].weight.grad, main_only.head.net[-1].weight.grad / 2
    )
    torch.testing.assert_close(
        late.late["functionals"].head.net[-1].weight.grad, func_only.head.net[-1].weight.grad / 2
    )
    assert out.shape == (8, 3)


def test_a_stream_feeds_one_member_and_regression_is_refused() -> None:
    with pytest.raises(ValueError, match=r"descriptors\.late: streams \['func'\] are also"):
        MODELS.build(
            "descriptors",
            inputs=INPUTS,
            task=TASK,
            descriptors=["lld", "func"],
            late={"f": ["func"]},
        )
    with pytest.raises(ValueError, match=r"belong to two members"):
        MODELS.build("descriptors", inputs=INPUTS, task=TASK, late={"f": ["func"], "g": ["func"]})
    with pytest.raises(ValueError, match=r"descriptors\.late\.f: modality 'nope'"):
        MODELS.build("descriptors", inputs=INPUTS, task=TASK, late={"f": ["nope"]})
    with pytest.raises(ValueError, match="classification tasks only"):
        MODELS.build(
            "descriptors",
            inputs=INPUTS,
            task=TaskSpec("clip", 2, targets=("v", "a")),
            late={"f": ["func"]},
        )


# ----------------------------------------------------------------------------- in a run

MODEL = {"name": "descriptors", "descriptors": ["audio"], "late": {"face_member": ["face"]}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("late")
    return clip_corpus(tmp), tmp


def _cfg(corpus, tmp=None, **over):
    return quiet_run_config(corpus, MODEL, tmp, **over)


def test_the_training_step_takes_the_mean_of_the_members_losses(corpus) -> None:
    cfg = _cfg(corpus, model={**MODEL, "dropout": 0.0})
    dm = CachedFeatureDataModule(cfg, "cpu")
    dm.setup()
    torch.manual_seed(0)
    mod = FusionModule(build_model(cfg, dm), cfg, dm, None)
    batch = next(iter(dm.train_dataloader()))
    loss = mod.training_step(batch, 0)
    members = mod.model.member_outputs
    want = (mod.loss_fn(members[0], batch["y"]) + mod.loss_fn(members[1], batch["y"])) / 2
    torch.testing.assert_close(loss, want)
    # the loss of the averaged output would be a different number: members are not co-trained
    assert not torch.allclose(loss, mod.loss_fn(mod.model(batch), batch["y"]))


def test_a_run_with_a_late_member_trains_and_is_not_stacked(corpus, tmp_path) -> None:
    res = train_from_config(_cfg(corpus, tmp_path))
    assert (res["run_dir"] / "checkpoints" / "last.pt").exists()
    assert all(torch.isfinite(torch.tensor(r["train/loss"])) for r in res["history"])
    cfg = _cfg(corpus)
    dm = CachedFeatureDataModule(cfg, "cpu")
    dm.setup()
    assert "model.late" in str(why_not_stackable(cfg, build_model(cfg, dm)))
    with pytest.raises(ConfigError, match=r"trainer\.mixup: .*model\.late"):
        FusionModule(build_model(cfg, dm), _cfg(corpus, trainer={"mixup": {}}), dm, None)


def test_cli_late_member_on_an_unknown_stream_exits_2_and_writes_nothing(
    corpus, tmp_path, capsys
) -> None:
    c, _ = corpus
    out = tmp_path / "runs"
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(clip_config(c, tmp_path, model=MODEL, output={"dir": str(out)})))
    assert main(["fuse-train", "-c", str(path), "model.late={m: [vidoe]}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "descriptors.late.m" in err and "vidoe" in err, err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_predict_applies_both_members_as_training_scored_them(corpus, tmp_path) -> None:
    """``avemo predict`` on a late-member run gives the run's own test probabilities."""
    import pandas as pd

    from avemo.fusion.predict import predict_files
    from avemo.fusion.run import Run

    c, _ = corpus
    run_dir = train_from_config(_cfg(corpus, tmp_path))["run_dir"]
    run = Run.from_dir(run_dir)  # the weights its final metrics came from
    assert run.model.has_members
    trained = pd.read_csv(run_dir / "predictions.csv")
    test = trained[trained["partition"] == "test"].set_index("clip_id")
    table, _ = predict_files(
        run, {"face": c["face"], "audio": c["audio"]}, test.index.tolist(), progress=False
    )
    cols = [k for k in test.columns if k.startswith("p_")]
    assert len(cols) == 3 and len(table) == len(test)
    got = table.set_index("clip_id").loc[test.index, cols].to_numpy(float)
    np.testing.assert_allclose(got, test[cols].to_numpy(float), atol=1e-6)
