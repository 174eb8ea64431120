"""Two ranks (RANK / WORLD_SIZE, as torchrun sets them) extract their shares into their own
shards; rank 0 consolidates only once every clip is committed. Stale markers from an earlier
run cannot trigger an early consolidation; a failing rank stops rank 0 with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_runner_plugin import REPO, make_wav_corpus, plugin_env
from test_runner_resume import assert_same_file

from avemo.data.store import FeatureFile
from avemo.extract.runner import run_features

SET = "test_wavstats"
N = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_wav_corpus(tmp_path_factory.mktemp("wavs"), n=N, broken=(5,))


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    return run_features(corpus, [SET], tmp_path_factory.mktemp("ref"), progress=False)[SET]


def launch(
    manifest: Path, out: Path, rank: int, *extra: str, timeout_s: float = 600
) -> subprocess.Popen:
    env = plugin_env(
        RANK=str(rank), WORLD_SIZE="2", AVEMO_SHARD_CLIPS="3", AVEMO_RANK_TIMEOUT_S=str(timeout_s)
    )
    cmd = [
        sys.executable,
        "-m",
        "avemo.cli",
        "features",
        "-m",
        str(manifest),
        "-s",
        SET,
        "-o",
        str(out),
        "--batch-clips",
        "2",
        "-q",
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def rank_ids(shards: Path, rank: int) -> set[str]:
    ids: set[str] = set()
    for p in shards.glob(f"shard-r{rank}-*.h5"):
        with FeatureFile(p) as ff:
            ids.update(ff.clip_ids)
    return ids


def wait(cond, proc: subprocess.Popen, timeout: float = 600.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "rank made no progress"
        time.sleep(0.05)


def test_two_ranks_equal_one_process_and_ignore_stale_markers(corpus, reference, tmp_path) -> None:
    out = tmp_path / "out"
    final, shards = out / f"{SET}.h5", out / f"{SET}.h5.shards"
    shards.mkdir(parents=True)
    (shards / "rank-1.done").write_text("done")  # an earlier run's markers
    old = shards / "rank-1.failed"
    old.write_text("RuntimeError: from yesterday")
    os.utime(old, (time.time() - 3600,) * 2)

    # rank 0 alone, told to give up 3 s after its own share: it must end by that timeout (the
    # stale done marker did not count as rank 1's clips, the stale failed marker did not abort
    # it), never by consolidating. An event (its exit), not a sleep, ends this phase.
    r0 = launch(corpus, out, 0, timeout_s=3)
    _, e0 = r0.communicate(timeout=600)
    assert r0.returncode != 0 and "TimeoutError" in e0 and "still not committed" in e0, e0[-2000:]
    assert f"{N // 2} clips of other ranks" in e0 and "from yesterday" not in e0, e0[-2000:]
    assert not final.exists(), "rank 0 consolidated before rank 1 ran"
    assert rank_ids(shards, 0) == {f"c{i:03d}" for i in range(0, N, 2)}
    assert rank_ids(shards, 1) == set()

    r0 = launch(corpus, out, 0)  # the same command again, now with rank 1
    r1 = launch(corpus, out, 1)
    o1, e1 = r1.communicate(timeout=600)
    o0, e0 = r0.communicate(timeout=600)
    assert r1.returncode == 0 and r0.returncode == 0, (e0, e1)
    assert f"{SET}: {final}" in o0 and o1 == ""  # only rank 0 reports (and writes) the file
    assert_same_file(final, reference)
    assert sorted(p.name for p in out.iterdir()) == [f"{SET}.h5"]


def test_failing_rank_stops_rank_0_then_rerun_completes(corpus, reference, tmp_path) -> None:
    out = tmp_path / "out"
    shards = out / f"{SET}.h5.shards"
    r0 = launch(corpus, out, 0)
    wait(lambda: (shards / "provenance.json").exists(), r0)
    r1 = launch(corpus, out, 1, "--set", f"{SET}:hop_s=0.02")  # another config: refused
    o1, e1 = r1.communicate(timeout=600)
    assert r1.returncode == 2 and "config.hop_s: cached 0.01 != requested 0.02" in e1, e1
    o0, e0 = r0.communicate(timeout=600)
    assert r0.returncode != 0
    assert "rank-1: ConfigMismatchError" in e0 and "not consolidating" in e0, e0[-2000:]
    assert not (out / f"{SET}.h5").exists()

    r0, r1 = launch(corpus, out, 0), launch(corpus, out, 1)  # same command again: resumes
    (_, e1), (_, e0) = r1.communicate(timeout=600), r0.communicate(timeout=600)
    assert r0.returncode == r1.returncode == 0, (e0, e1)
    assert_same_file(out / f"{SET}.h5", reference)
    assert sorted(p.name for p in out.iterdir()) == [f"{SET}.h5"]


def test_under_torchrun_two_processes(corpus, reference, tmp_path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    out = tmp_path / "out"
    env = plugin_env(AVEMO_SHARD_CLIPS="3", AVEMO_RANK_TIMEOUT_S="120")
    res = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "avemo.cli",
            "features",
            "-m",
            str(corpus),
            "-s",
            SET,
            "-o",
            str(out),
            "-q",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_file(out / f"{SET}.h5", reference)
    assert sorted(p.name for p in out.iterdir()) == [f"{SET}.h5"]


SCRIPT = """
import sys
import torch.distributed as dist
from avemo.extract.runner import run_features
dist.init_process_group("gloo")
files = run_features(sys.argv[1], ["test_wavstats"], sys.argv[2], progress=False, shard_clips=3)
print(dist.get_rank(), dist.get_world_size(), sorted(files))
dist.destroy_process_group()
"""


def test_initialised_torch_distributed_uses_its_rank_and_barrier(
    corpus, reference, tmp_path
) -> None:
    """A script (e.g. Lightning DDP) that already set up torch.distributed: rank / world come
    from it and ranks meet at a barrier before rank 0 consolidates."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    script = tmp_path / "ddp_extract.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    res = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(corpus),
            str(out),
        ],
        cwd=REPO,
        env=plugin_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(res.stdout.split("\n")[:2]) == ["0 2 ['test_wavstats']", "1 2 []"], res.stdout
    assert_same_file(out / f"{SET}.h5", reference)
    assert sorted(p.name for p in out.iterdir()) == [f"{SET}.h5"]
