"""Faults that lose nothing: a full disk, a feature file damaged on disk, media deleted after
the manifest was written. Each reruns to the same bytes an uninterrupted run writes.

Real runs of the real ``logmel`` set on generated wav files; the full disk is a real tmpfs of
a few hundred KB mounted in a private mount namespace (``unshare``), grown for the rerun.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_runner_kill_resume import _same
from test_runner_plugin import REPO, make_wav_corpus

from avemo.cli import main
from avemo.data.store import FeatureFile, FeatureWriter
from avemo.errors import DamagedFileError, DiskFullError
from avemo.extract.runner import run_features

SET = "logmel"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_wav_corpus(tmp_path_factory.mktemp("wavs"), n=24, broken=(7,), min_s=0.6, max_s=1.2)


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory) -> Path:
    """The uninterrupted run every faulty run must end up equal to."""
    return run_features(corpus, [SET], tmp_path_factory.mktemp("clean"), progress=False)[SET]


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "avemo.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


# ----------------------------------------------------------------------------- disk full


@pytest.mark.parametrize(
    "size, phase", [("160k", "a shard of 2 clip(s)"), ("900k", "the consolidated file")]
)
def test_disk_full_is_one_message_and_the_rerun_with_room_resumes(
    corpus, clean, tmp_path, size, phase
):
    """The disk fills while shards are written (160 KB) or while they are consolidated (900 KB)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux `unshare` to mount a small tmpfs in a private namespace")
    small, res = tmp_path / "small", tmp_path / "res"
    small.mkdir()
    res.mkdir()
    cmd = f'"{sys.executable}" -m avemo.cli features -m "{corpus}" -s {SET} -o "{small}/out" --batch-clips 2 -q'
    script = f"""
mount -t tmpfs -o size={size} tmpfs "{small}" || exit 99
{cmd} 2> "{res}/err1"; echo $? > "{res}/rc1"
find "{small}" -type f | sort > "{res}/files1"
mount -o remount,size=16m "{small}"
{cmd} 2> "{res}/err2"; echo $? > "{res}/rc2"
cp "{small}/out/{SET}.h5" "{res}/{SET}.h5"
find "{small}" -type f | sort > "{res}/files2"
"""
    env = {**os.environ, "AVEMO_SHARD_CLIPS": "2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["unshare", "-rm", "bash", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode == 99 or not (res / "rc1").exists():
        pytest.skip(
            f"cannot mount a tmpfs in a private namespace here: {proc.stderr.strip()[:200]}"
        )
    err1 = (res / "err1").read_text().strip()
    assert (res / "rc1").read_text().strip() == str(DiskFullError.exit_code), err1
    assert len(err1.splitlines()) == 1 and "Traceback" not in err1, err1
    assert "disk full writing" in err1 and "MB free" in err1 and "rerun the same command" in err1
    assert f"{phase} needs about" in err1
    files1 = (res / "files1").read_text().split()
    assert any("shard-r0-" in f for f in files1), (
        files1
    )  # some clips were committed before it filled
    assert not any(f.endswith(".tmp") for f in files1), files1  # no half-written file left behind
    assert (res / "rc2").read_text().strip() == "0", (res / "err2").read_text()
    assert (res / "files2").read_text().split() == [f"{small}/out/{SET}.h5"]
    _same(res / f"{SET}.h5", clean)


# ----------------------------------------------------------------------------- damaged file


def _zero_block(path: Path, frac: float, nbytes: int) -> tuple[int, int]:
    """Overwrite ``nbytes`` of the values dataset with zeros, ``frac`` of the way in (as a bad
    block would); returns the damaged byte range relative to the dataset's start."""
    with h5py.File(path, "r") as f:
        ds = f["values"]
        start, size = ds.id.get_offset(), ds.id.get_storage_size()
    lo = int(size * frac)
    with open(path, "r+b") as fh:
        fh.seek(start + lo)
        fh.write(b"\0" * nbytes)
    return lo, lo + nbytes


def _touched(clean: Path, lo: int, hi: int) -> list[str]:
    """Clips whose stored value bytes the zero block changed: worked out from the clean file."""
    with FeatureFile(clean) as ff:
        row = int(np.prod(ff.row_shape)) * ff.dtype.itemsize
        flat = ff.load_all().values.reshape(-1).view(np.uint8)
        out = []
        for i, cid in enumerate(ff.clip_ids):
            a, b = int(ff.offsets[i]) * row, int(ff.offsets[i + 1]) * row
            x, y = max(a, lo), min(b, hi)
            if x < y and flat[x:y].any():
                out.append(cid)
        return out


def test_a_damaged_file_is_found_and_only_its_damaged_clips_are_rebuilt(
    corpus, clean, tmp_path, capsys
):
    out = tmp_path / "feat"
    out.mkdir()
    path = out / f"{SET}.h5"
    shutil.copy(clean, path)
    lo, hi = _zero_block(path, 0.5, 3000)
    touched = _touched(clean, lo, hi)
    assert touched  # the block hit real data

    assert main(["inspect", "--verify", str(path)]) == DamagedFileError.exit_code
    cap = capsys.readouterr()
    assert f"DAMAGED: {len(touched)} clip(s) no longer match: {', '.join(touched)}" in cap.out
    assert len(cap.err.strip().splitlines()) == 1 and "rerun `avemo features`" in cap.err

    run_features(corpus, [SET], out, progress=False)  # used to say "done" and keep the zeros
    _same(path, clean)
    assert main(["inspect", "--verify", str(path)]) == 0
    assert "every clip matches" in capsys.readouterr().out


def test_a_damaged_shard_is_refused_with_its_name(corpus, clean, tmp_path):
    """Damage between commit and consolidation: refused (the shard is named), nothing replaced."""
    out = tmp_path / "feat"
    env = {"AVEMO_SHARD_CLIPS": "4", "OMP_NUM_THREADS": "1"}
    df = pd.read_csv(corpus)
    half = tmp_path / "half.csv"
    df.iloc[:12].to_csv(half, index=False)
    assert (
        _cli("features", "-m", str(half), "-s", SET, "-o", str(out), "-q", env=env).returncode == 0
    )
    # the state a later run killed before consolidating leaves: more clips in a committed shard
    with FeatureFile(clean) as ff:
        prov = {
            k: ff.provenance[k] for k in ff.provenance if k not in ("format_version", "row_shape")
        }
        rest = [ff.clip(c) for c in ff.clip_ids[12:16]]
    w = FeatureWriter(out / f"{SET}.h5", prov, shard_clips=100)
    for c in rest:
        w.add(c)
    w.flush()
    shard = next((out / f"{SET}.h5.shards").glob("shard-r0-*.h5"))
    _zero_block(shard, 0.3, 2000)
    before = (out / f"{SET}.h5").read_bytes()
    with pytest.raises(DamagedFileError, match=rf"{shard.name} is damaged: \d+ clip\(s\)"):
        FeatureWriter(out / f"{SET}.h5", prov).finalize()
    assert (out / f"{SET}.h5").read_bytes() == before  # the good final file is untouched
    assert not (out / f"{SET}.h5.tmp").exists()


# ----------------------------------------------------------------------------- media deleted


def test_media_deleted_after_the_manifest_get_status_missing_then_come_back(corpus, tmp_path):
    df = pd.read_csv(corpus)
    media = tmp_path / "media"  # a copy: this test deletes files
    shutil.copytree(Path(df["audio"][0]).parent, media)
    df["audio"] = [str(media / Path(p).name) for p in df["audio"]]
    manifest = tmp_path / "manifest.csv"
    df.to_csv(manifest, index=False)
    clean = run_features(manifest, [SET], tmp_path / "clean", progress=False)[SET]
    gone = {"c004": media / "clip004.wav", "c011": media / "clip011.wav"}
    saved = {c: p.read_bytes() for c, p in gone.items()}
    for p in gone.values():
        p.unlink()
    out = tmp_path / "feat"
    r = _cli("features", "-m", str(manifest), "-s", SET, "-o", str(out))
    assert r.returncode == 0, r.stderr  # the rest extracts
    assert "2 clip(s) name media files that do not exist" in r.stderr
    with FeatureFile(out / f"{SET}.h5") as ff, FeatureFile(clean) as ref:
        st = dict(zip(ff.clip_ids, ff.status, strict=True))
        assert {c for c, s in st.items() if s == "missing"} == set(gone)
        assert "clip004.wav does not exist" in ff.clip("c004").message
        ok = [c for c in ff.clip_ids if c not in gone]
        for c in ok:
            np.testing.assert_array_equal(ff.clip(c).values, ref.clip(c).values)
    for c, p in gone.items():
        p.write_bytes(saved[c])
    assert _cli("features", "-m", str(manifest), "-s", SET, "-o", str(out), "-q").returncode == 0
    _same(out / f"{SET}.h5", clean)


def test_a_manifest_none_of_whose_media_exist_is_refused(tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "clip_id": ["a", "b"],
            "audio": ["nope/a.wav", "nope/b.wav"],
            "label": ["x", "y"],
            "split": "train",
            "subject": "s",
        }
    ).to_csv(manifest, index=False)
    r = _cli("features", "-m", str(manifest), "-s", SET, "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "none of the manifest's 2 media files exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
