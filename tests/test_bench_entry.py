"""The one benchmark entry (``python -m avemo.bench``): every section importable with a ``main``,
output where ``-o`` says, else the dated file relative to the working directory."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import time

import pytest

from avemo.bench.__main__ import SECTIONS


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_section_has_main(name: str) -> None:
    run = importlib.import_module(SECTIONS[name]).main
    params = inspect.signature(run).parameters
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    assert required <= {"quick", "device", "step", "argv"}  # what the entry can pass


def _bench(args: list[str], cwd) -> str:
    env = {k: v for k, v in os.environ.items() if k != "AVEMO_BENCH_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "avemo.bench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_explicit_output_file(tmp_path) -> None:
    out = tmp_path / "sub" / "mine.md"
    _bench(["--only", "store", "--quick", "-o", str(out)], tmp_path)
    text = out.read_text()
    assert "## Feature store (HDF5 ragged)" in text and "| write shards" in text
    assert not (tmp_path / "benchmarks").exists()
    # a second run replaces the section instead of appending another
    _bench(["--only", "store", "--quick", "-o", str(out)], tmp_path)
    assert out.read_text().count("## Feature store (HDF5 ragged)") == 1


def test_default_output_is_relative_to_the_working_directory(tmp_path) -> None:
    stdout = _bench(["--only", "store", "--quick"], tmp_path)
    want = tmp_path / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}.md"
    assert want.is_file() and "## Feature store" in want.read_text()
    assert str(want.relative_to(tmp_path)) in stdout


def test_unknown_section_is_refused(tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "avemo.bench", "--only", "stor"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "invalid choice: 'stor'" in r.stderr
    assert not (tmp_path / "benchmarks").exists()


def test_section_options_in_help(tmp_path) -> None:
    out = _bench(["--only", "grid", "--only", "fusion", "-h"], tmp_path)
    assert "--crop-step" in out and "--epochs" in out and "--overhead-ref" in out
    assert not (tmp_path / "benchmarks").exists()
