"""Runs through Lightning: CSV/TensorBoard loggers, checkpoint and history callbacks, progress
output (epoch k/N with an ETA), and no run folder left behind by a run that failed."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
import torch
from _fusion_data import clip_config, clip_corpus

from avemo.cli import main
from avemo.fusion.config import ConfigError, load_config
from avemo.fusion.train import train_from_config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clip")
    return tmp, clip_corpus(tmp)


def test_csv_logger_history_and_checkpoints(corpus, tmp_path, capsys):
    tmp, c = corpus
    cfg = clip_config(c, tmp_path, trainer={"max_epochs": 3, "early_stopping": None})
    res = train_from_config(cfg, run_dir=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    hist = pd.read_csv(run / "metrics.csv")  # one row per epoch (MetricsHistory)
    assert list(hist["epoch"]) == [0, 1, 2] and {
        "lr",
        "train/loss",
        "val/loss",
        "val/accuracy",
    } <= set(hist)
    logged = pd.read_csv(run / "logs" / "csv" / "metrics.csv")  # Lightning's CSVLogger
    assert {"train/loss", "val/accuracy", "val/loss", "epoch"} <= set(logged.columns)
    assert logged["val/accuracy"].dropna().tolist() == pytest.approx(hist["val/accuracy"].tolist())
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert best.keys() == last.keys()
    assert res["best_epoch"] == int(hist["val/accuracy"].idxmax())
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "] epoch " in ln]
    assert len(lines) == 3 and "epoch 1/3" in lines[0] and "ETA" in lines[0]
    assert "val/accuracy" in lines[-1] and "ETA" not in lines[-1]


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed"
)
def test_tensorboard_logger_writes_event_files(corpus, tmp_path):
    tmp, c = corpus
    cfg = clip_config(c, tmp_path, trainer={"max_epochs": 2, "loggers": ["csv", "tensorboard"]})
    train_from_config(cfg, run_dir=tmp_path / "run", progress=False)
    events = list((tmp_path / "run" / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert {"val/accuracy", "val/loss", "train/loss"} <= set(acc.Tags()["scalars"])
    assert len(acc.Scalars("val/accuracy")) == 2


def test_progress_bar_shows_epoch_of_n(corpus, tmp_path, capsys):
    tmp, c = corpus
    cfg = clip_config(c, tmp_path, trainer={"max_epochs": 2, "progress": "bar"})
    train_from_config(cfg, run_dir=tmp_path / "run")
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "epoch 1/2" in text and "epoch 2/2 (run ETA" in text


def test_unknown_or_missing_logger_is_a_config_error(corpus, tmp_path):
    tmp, c = corpus
    with pytest.raises(ConfigError, match="trainer.loggers"):
        load_config(clip_config(c, tmp_path), ["trainer.loggers=[wandb]"])
    if importlib.util.find_spec("mlflow") is None:
        with pytest.raises(ConfigError, match="trainer.loggers: mlflow is not installed"):
            load_config(clip_config(c, tmp_path), ["trainer.loggers=[mlflow]"])


def test_a_failed_run_leaves_no_run_folder(corpus, tmp_path, capsys):
    tmp, c = corpus
    out = tmp_path / "runs"
    # fails in the data side (a feature file lacks manifest clips): before any folder is made
    man = pd.read_csv(c["manifest"])
    bigger = tmp_path / "manifest.csv"
    pd.concat([man, man.iloc[:1].assign(clip_id="ghost")]).to_csv(bigger, index=False)
    cfg = clip_config(c, tmp_path, data={"manifest": str(bigger)}, output={"dir": str(out)})
    with pytest.raises(ConfigError, match="missing"):
        train_from_config(cfg)
    assert not out.exists()
    # fails while building the model, after the run folder was made: it is removed again
    cfg = clip_config(
        c, tmp_path, model={"name": "zhou", "visual": "nope"}, output={"dir": str(out)}
    )
    with pytest.raises(ValueError, match="nope"):
        train_from_config(cfg)
    assert not any(out.rglob("*"))
    # and through the CLI: exit 2, one message, nothing written
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(
        yaml.safe_dump(
            clip_config(c, tmp_path, data={"manifest": str(bigger)}, output={"dir": str(out)})
        )
    )
    assert main(["fuse-train", "-c", str(p)]) == 2
    assert "ghost" in capsys.readouterr().err and not any(out.rglob("*"))


def test_fuse_train_quiet_prints_no_epochs(corpus, tmp_path, capsys):
    import yaml

    tmp, c = corpus
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(clip_config(c, tmp_path, trainer={"max_epochs": 2})))
    assert main(["fuse-train", "-q", "-c", str(p)]) == 0
    cap = capsys.readouterr()
    assert "epoch" not in cap.out + cap.err and "run folder:" in cap.out
