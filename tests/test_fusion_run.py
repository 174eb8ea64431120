"""``fusion.run``: one rule for which checkpoint a run applies (asked for and missing: one
line naming what the folder holds, from ``Run.from_dir`` and from ``avemo predict``), one
device rule (``resolve_device``, which ``trainer.accelerator`` goes through too), and one
``fuse-train`` entry point (``python -m avemo.fusion.train`` is ``avemo fuse-train``)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from avemo.cli import main as cli
from avemo.errors import UsageError
from avemo.fusion.run import DeviceFallbackWarning, Run, RunFolderError, resolve_device
from avemo.fusion.train import trainer_device

NO_CUDA = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the fallback is for machines without CUDA"
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A finished run (best.pt + last.pt), and copies as an interrupted run leaves it (best.pt
    only: last.pt is written at the end of the fit) and as a run whose monitored metric never
    improved leaves it (last.pt only)."""
    from workflows_helpers import make_corpus

    from avemo.fusion.train import train_from_config

    tmp = tmp_path_factory.mktemp("fusion_run")
    make_corpus(tmp / "c", n_clips=24)
    cfg = {
        "name": "r",
        "seed": 0,
        "data": {
            "manifest": str(tmp / "c/manifest.csv"),
            "batch_size": 8,
            "features": {
                "face": str(tmp / "c/features/face.h5"),
                "audio": str(tmp / "c/features/audio.h5"),
            },
        },
        "model": {"name": "zhou", "temporal": "fan_relation", "fusion": "fbp"},
        "optim": {"name": "adam", "lr": 0.05},
        "trainer": {"max_epochs": 2, "progress": "none", "accelerator": "cpu"},
        "split": {"method": "official"},
        "output": {"plots": False, "verbose": False},
    }
    full = train_from_config(cfg, run_dir=tmp / "full")["run_dir"]
    out = {"full": Path(full)}
    for name, drop in (("best_only", "last.pt"), ("last_only", "best.pt")):
        out[name] = Path(shutil.copytree(full, tmp / name))
        (out[name] / "checkpoints" / drop).unlink()
    return out


def _same_weights(run: Run, path: Path) -> bool:
    want = torch.load(path, weights_only=True)
    have = run.model.state_dict()
    return set(want) == set(have) and all(torch.equal(want[k], have[k].cpu()) for k in want)


@pytest.mark.parametrize("ask", ["best", "last"])
def test_the_asked_checkpoint_is_the_one_loaded(runs, ask):
    run = Run.from_dir(runs["full"], ask)
    assert run.checkpoint == runs["full"] / "checkpoints" / f"{ask}.pt"
    assert _same_weights(run, run.checkpoint)


@pytest.mark.parametrize(
    ("folder", "ask", "has"), [("best_only", "last", "best"), ("last_only", "best", "last")]
)
def test_a_missing_checkpoint_is_refused_naming_the_one_there(runs, folder, ask, has):
    with pytest.raises(RunFolderError) as e:
        Run.from_dir(runs[folder], ask)
    msg = str(e.value)
    assert f"checkpoints/{ask}.pt" in msg and f"{has}.pt" in msg and f"--checkpoint {has}" in msg
    assert len(msg.splitlines()) == 1


def test_no_checkpoint_asked_means_the_weights_the_final_metrics_came_from(runs):
    """``fit_and_evaluate`` scores best.pt when the run wrote one, else the last weights."""
    assert Run.from_dir(runs["full"]).checkpoint.name == "best.pt"
    assert Run.from_dir(runs["last_only"]).checkpoint.name == "last.pt"
    assert Run.from_dir(runs["best_only"]).checkpoint.name == "best.pt"


def test_a_run_with_averaged_weights_applies_them_by_default(runs, tmp_path):
    """``trainer.swa`` runs are scored with ``swa.pt`` (test_fusion_mixup_swa holds the
    metrics to it); asking for ``best`` still gives ``best.pt``."""
    swa = Path(shutil.copytree(runs["full"], tmp_path / "swa"))
    shutil.copy(swa / "checkpoints" / "last.pt", swa / "checkpoints" / "swa.pt")
    assert Run.from_dir(swa).checkpoint.name == "swa.pt"
    assert Run.from_dir(swa, "best").checkpoint.name == "best.pt"


def test_a_bad_checkpoint_name_and_a_folder_without_any_are_user_errors(runs, tmp_path):
    with pytest.raises(UsageError, match="must be swa, best or last"):
        Run.from_dir(runs["full"], "final")
    bare = Path(shutil.copytree(runs["full"], tmp_path / "bare"))
    shutil.rmtree(bare / "checkpoints")
    with pytest.raises(RunFolderError, match="did the run finish"):
        Run.from_dir(bare)


def test_avemo_predict_refuses_a_missing_checkpoint_in_one_line_exit_2(
    runs, tmp_path, capsys, media
):
    out = tmp_path / "out"
    clip = media("single_face.mp4")
    assert (
        cli(["predict", str(runs["best_only"]), str(clip), "--checkpoint", "last", "-o", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("avemo predict: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "checkpoints/last.pt" in err and "--checkpoint best" in err
    assert not out.exists()


def test_device_words_and_unknown_ones():
    assert resolve_device("cpu") == torch.device("cpu")
    want = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == want and resolve_device(None) == want
    assert trainer_device("cpu") == ("cpu", "cpu")
    for bad in ("tpu", "cuda:x", "mps"):
        with pytest.raises(UsageError, match="device must be auto, cpu, cuda"):
            resolve_device(bad)


@NO_CUDA
@pytest.mark.parametrize("ask", ["cuda", "CUDA", "gpu", "cuda:1", torch.device("cuda:0")])
def test_a_gpu_asked_for_without_cuda_runs_on_the_cpu_with_a_notice(ask):
    with pytest.warns(DeviceFallbackWarning, match="no CUDA GPU is visible"):
        assert resolve_device(ask) == torch.device("cpu")


@NO_CUDA
def test_trainer_accelerator_follows_the_same_rule():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto on a CPU-only machine: no notice
        assert trainer_device("auto") == ("cpu", "cpu") and trainer_device(None) == ("cpu", "cpu")
    for acc in ("gpu", "cuda"):
        with pytest.warns(DeviceFallbackWarning):
            assert trainer_device(acc) == ("cpu", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_machine_cuda_is_used_and_a_missing_index_refused():
    assert resolve_device("cuda").type == "cuda" and trainer_device("gpu") == ("cuda", "gpu")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(UsageError, match="CUDA GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_python_m_fusion_train_is_avemo_fuse_train(capsys):
    """Both spellings give the same one-line user error and exit 2 (one entry point); the
    ``python -m`` spelling as a user types it, in its own interpreter."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "avemo.fusion.train", "demo_fbp", "nosuch.key=1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert cli(["fuse-train", "-c", "demo_fbp", "nosuch.key=1"]) == 2
    err_cli = capsys.readouterr().err
    assert proc.stderr == err_cli and err_cli.startswith("avemo fuse-train: error:")
    assert len(err_cli.strip().splitlines()) == 1
