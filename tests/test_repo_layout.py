"""The package holds the library only: experiments and benchmark results live outside it
(``experiments/``, ``benchmarks/results/``), so an installed avemo carries neither and no test
or default depends on a results file."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("avemo", "bench", "data", "extract", "fusion", "workflows")


def tracked(*paths: str) -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", *paths], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out.stdout.split()


def test_no_results_or_experiment_in_the_package():
    files = tracked(*PACKAGE_FOLDERS)
    assert files
    assert not [f for f in files if "bench_results" in f or "/results/" in f]
    # the EmoDB studies moved to experiments/emodb (the emodb dataset adapter stays: it is library)
    assert not [f for f in files if f.startswith("workflows/emodb")]


def test_experiments_and_results_are_not_installed():
    tree = ast.parse((REPO / "setup.py").read_text())
    roots = next(
        n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.targets[0].id == "ROOTS"
    )
    folders = set(ast.literal_eval(roots).values())
    assert folders == set(PACKAGE_FOLDERS)
    assert (REPO / "experiments").is_dir() and (REPO / "benchmarks" / "results").is_dir()
