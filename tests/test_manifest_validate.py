"""Manifest validation: every problem in one ManifestError, and through the CLI exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from avemo.cli import main
from avemo.data.manifest import SHOW_ROWS, ManifestError, load_manifest, save_manifest, validate


@pytest.fixture()
def clips(tmp_path) -> Path:
    for n in "abcd":
        (tmp_path / f"{n}.mp4").write_bytes(b"")
    return tmp_path


def _table(root: Path, rows: list[tuple]) -> Path:
    df = pd.DataFrame(rows, columns=["clip_id", "video", "split", "subject", "label"])
    return save_manifest(df, root / "manifest.csv")


def test_valid_manifest_loads_with_absolute_paths(clips):
    path = _table(
        clips, [("a", "a.mp4", "train", "s1", "happy"), ("b", "b.mp4", "val", "s2", "sad")]
    )
    df = load_manifest(path, classes=["happy", "sad"])
    assert df["video"].map(lambda p: Path(p).is_absolute() and Path(p).exists()).all()
    assert df.attrs["classes"] == ["happy", "sad"]


def test_all_problems_in_one_error(clips):
    path = _table(
        clips,
        [
            ("a", "a.mp4", "train", "s1", "happy"),
            ("a", "b.mp4", "train", "s1", "sad"),  # duplicate id
            ("c", "missing.mp4", "train", "s2", "sad"),  # missing file
            ("d", "d.mp4", "val", "s3", "bored"),  # unknown label
        ],
    )
    with pytest.raises(ManifestError) as e:
        load_manifest(path, classes=["happy", "sad"])
    msg = str(e.value)
    assert "2 row(s) share a clip_id" in msg
    assert "1 row(s) point at a missing video file" in msg and "missing.mp4" in msg
    assert "1 row(s) have a label outside ['happy', 'sad']" in msg and "bored" in msg


def test_missing_columns_are_named(clips):
    df = pd.DataFrame({"clip_id": ["a"], "video": ["a.mp4"], "label": ["x"]})
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['split', 'subject'\]"):
        validate(df, check_files=False)
    df = pd.DataFrame({"clip_id": ["a"], "split": ["train"], "subject": ["s"]})
    with pytest.raises(ManifestError, match="video or audio.*label or annotation"):
        validate(df, check_files=False)


def test_long_lists_are_cut(tmp_path):
    n = SHOW_ROWS + 7
    df = pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(n)],
            "video": [f"v{i}.mp4" for i in range(n)],
            "split": "train",
            "subject": "s",
            "label": "x",
        }
    )
    with pytest.raises(ManifestError, match=r"and 7 more") as e:
        validate(df, base=tmp_path)
    assert "c0" in str(e.value) and f"c{n - 1}" not in str(e.value)


def test_empty_ids_and_rows_without_media(tmp_path):
    df = pd.DataFrame(
        {
            "clip_id": ["", "b"],
            "video": [None, None],
            "audio": [None, None],
            "split": "train",
            "subject": "s",
            "label": "x",
        }
    )
    with pytest.raises(ManifestError) as e:
        validate(df, check_files=False)
    assert "empty clip_id" in str(e.value) and "neither a video nor an audio" in str(e.value)


def test_missing_manifest_file(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv")


def test_cli_manifest_errors_exit_2_without_traceback(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text(
        "clip_id,video,split,subject,label\na,gone.mp4,train,s,x\na,gone2.mp4,train,s,x\n"
    )
    rc = main(["manifest", "csv", str(table), "-o", str(tmp_path / "out.csv")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("avemo manifest: error: invalid manifest")
    assert "share a clip_id" in err and "missing video file" in err
    assert "Traceback" not in err and "\n\n" not in err.strip()
    assert not (tmp_path / "out.csv").exists()
    assert (
        main(["manifest", "ravdess", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o.csv")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert main(["manifest", "nosuchset", str(tmp_path), "-o", str(tmp_path / "o.csv")]) == 2
    assert "unknown dataset 'nosuchset'" in capsys.readouterr().err


def test_cli_subprocess_exit_code_and_success(tmp_path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "1.wav").write_bytes(b"")
    out = tmp_path / "m.csv"
    ok = subprocess.run(
        [sys.executable, "-m", "avemo", "manifest", "folder", str(tmp_path), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "1 clips" in ok.stdout and load_manifest(out)["label"].tolist() == ["happy"]
    bad = subprocess.run(
        [sys.executable, "-m", "avemo", "manifest", "emodb", str(tmp_path), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "found no clips" in bad.stderr and "Traceback" not in bad.stderr
