"""The Makefile's user-facing targets pass what README and the tutorials say they pass: read with
``make -n`` (prints the commands, runs nothing; set-up is taken as done)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def planned(*args: str) -> list[list[str]]:
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "-o", ".venv/.avemo-setup", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # the avemo commands (a checkout is often a folder named avemo: match the program, not text)
    cmds = [shlex.split(line) for line in out.splitlines() if line.strip()]
    return [c for c in cmds if Path(c[0]).name == "avemo"]


def test_manifest_adapter_defaults_to_the_dataset_name():
    (cmd,) = planned("manifest", "DATASET=ravdess", "ROOT=/data/RAVDESS")
    assert cmd[1:] == ["manifest", "ravdess", "/data/RAVDESS", "-o", "manifests/ravdess.csv"]


def test_manifest_takes_another_adapter_and_its_options():
    (cmd,) = planned(
        "manifest",
        "DATASET=mine",
        "ADAPTER=csv",
        "ROOT=/data/mine.csv",
        "ARGS=--option base=/data --option sep=;",
    )
    assert cmd[1:] == [
        "manifest",
        "csv",
        "/data/mine.csv",
        "-o",
        "manifests/mine.csv",
        "--option",
        "base=/data",
        "--option",
        "sep=;",
    ]


def test_corpus_targets_read_the_corpus_folders():
    (cmd,) = planned("fuse-train", "DATASET=mine", "CONFIG=workflows/configs/demo_fbp.yaml")
    assert {
        "data.manifest=manifests/mine.csv",
        "data.features_dir=features/mine",
        "data.classes=null",
    } <= set(cmd)
