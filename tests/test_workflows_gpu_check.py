"""The GPU check script in its CPU dry mode (every path, tiny sizes), and its no-CUDA exit."""

from __future__ import annotations

import torch

from avemo.workflows import gpu_check


def test_gpu_check_dry_mode_runs_every_path_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("AVEMO_BENCH_DIR", str(tmp_path))
    rows, ok = gpu_check.run("cpu", tiny=True)
    checks = " | ".join(r["check"] for r in rows)
    for path in (
        "face detection",
        "backbone",
        "audio CNN",
        "device-resident vs per-sample",
        "training steps",
        "stacked grid",
    ):
        assert path in checks, path
    assert ok, [r for r in rows if r["ok"] != "yes"]
    measured = [r for r in rows if "skipped" not in str(r["vs CPU"])]
    assert all(r["ok"] == "yes" for r in measured) and len(measured) >= 6
    table = next(tmp_path.glob("*.md")).read_text()
    assert gpu_check.TITLE in table and "stacked grid" in table


def test_gpu_check_says_no_cuda_and_exits_3(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("AVEMO_BENCH_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == gpu_check.NO_CUDA
    assert "no CUDA device" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())  # nothing written
