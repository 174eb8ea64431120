"""``optim.groups``: per-module learning rate / weight decay (issue 23: a CNN branch beside a
linear head under weight decay 10). Held to torch's documented AdamW / SGD update written out by
hand: with zero gradients one AdamW step is ``p <- p * (1 - lr * wd)`` (decoupled decay, Adam
term 0), one SGD step without momentum or decay is ``p <- p - lr * g``."""

from __future__ import annotations

import pytest
import torch
import yaml
from _fusion_data import clip_config, clip_corpus

from avemo.cli import main
from avemo.fusion.config import ConfigError, OptimGroup, load_config
from avemo.fusion.datamodule import CachedFeatureDataModule
from avemo.fusion.module import FusionModule
from avemo.fusion.optim import param_groups
from avemo.fusion.stacked import why_not_stackable
from avemo.fusion.train import build_model, train_from_config

BRANCH = "branches.face"  # the descriptors model's deep stream over `face`

MODEL = {
    "name": "descriptors",
    "descriptors": ["audio"],
    "deep": {"face": {"encoder": {"name": "mlp", "hidden": [8]}, "temporal": "mean"}},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("groups")
    return clip_corpus(tmp), tmp


def _cfg(corpus, **optim):
    c, tmp = corpus
    return load_config(clip_config(c, tmp, model=MODEL, optim={"name": "adamw", **optim}))


def _module(corpus, **optim) -> FusionModule:
    cfg = _cfg(corpus, **optim)
    dm = CachedFeatureDataModule(cfg, "cpu")
    dm.setup()
    torch.manual_seed(0)
    return FusionModule(build_model(cfg, dm), cfg, dm, corpus[1] / "unused")


def test_adamw_step_decays_each_group_by_its_own_rate(corpus) -> None:
    lr, wd, wd_branch = 0.1, 2.0, 0.01
    mod = _module(corpus, lr=lr, weight_decay=wd, groups={BRANCH: {"weight_decay": wd_branch}})
    opt = mod.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    before = {n: p.detach().clone() for n, p in mod.model.named_parameters()}
    assert any(n.startswith(BRANCH + ".") for n in before)
    assert any(not n.startswith(BRANCH + ".") for n in before)
    for p in mod.model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in mod.model.named_parameters():
        rate = wd_branch if n.startswith(BRANCH + ".") else wd
        torch.testing.assert_close(p.detach(), before[n] * (1 - lr * rate), msg=n)


def test_group_lr_with_sgd_and_longest_prefix_wins() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.Linear(4, 2)))
    groups = {"1": OptimGroup(lr=0.5), "1.0.weight": OptimGroup(lr=0.25)}
    got = param_groups(net, groups)
    opt = torch.optim.SGD(got, lr=0.1, momentum=0.0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    want = {"0.weight": 0.1, "0.bias": 0.1, "1.0.weight": 0.25, "1.0.bias": 0.5}
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - want[n], msg=n)
    # "1" must not catch a sibling "10": prefixes end at a dot
    wide = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(11)])
    (rest, one) = param_groups(wide, {"1": OptimGroup(weight_decay=0.0)})
    assert len(one["params"]) == 2 and len(rest["params"]) == 20


def test_prefix_naming_no_module_is_a_config_error_listing_the_modules() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4))
    with pytest.raises(ConfigError, match=r"optim\.groups\.branches\.cnn: .* modules: 0"):
        param_groups(net, {"branches.cnn": OptimGroup(weight_decay=0.1)})


def test_group_keys_are_checked_and_never_reach_the_optimiser(corpus) -> None:
    with pytest.raises(ConfigError, match="momentum"):
        _cfg(corpus, groups={BRANCH: {"momentum": 0.5}})
    with pytest.raises(ConfigError, match="weight_decay"):
        _cfg(corpus, groups={BRANCH: {"weight_decay": -1}})
    cfg = _cfg(corpus, groups={BRANCH: {"weight_decay": 0.01}})
    assert "groups" not in cfg.optim.options()
    assert "optim.groups" in str(why_not_stackable(cfg))
    assert why_not_stackable(_cfg(corpus)) is None


def test_trained_run_records_the_groups(corpus, tmp_path) -> None:
    c, _ = corpus
    raw = clip_config(
        c,
        tmp_path,
        model=MODEL,
        optim={"name": "adamw", "weight_decay": 10.0, "groups": {BRANCH: {"weight_decay": 0.0}}},
        trainer={"max_epochs": 1},
        output={"dir": str(tmp_path / "runs"), "plots": False, "verbose": False},
    )
    res = train_from_config(raw)
    saved = yaml.safe_load((res["run_dir"] / "config.yaml").read_text())
    assert saved["optim"]["groups"] == {BRANCH: {"lr": None, "weight_decay": 0.0}}
    assert load_config(res["run_dir"] / "config.yaml").optim.groups[BRANCH].weight_decay == 0.0


def test_cli_bad_prefix_exits_2_and_writes_nothing(corpus, tmp_path, capsys) -> None:
    c, _ = corpus
    out = tmp_path / "runs"
    raw = clip_config(c, tmp_path, model=MODEL, output={"dir": str(out)})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    argv = ["fuse-train", "-c", str(path), "optim.groups={branches.fcae: {weight_decay: 0}}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "optim.groups.branches.fcae" in err and "branches.face" in err, err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
