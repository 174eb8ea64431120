"""``avemo inspect``, ``avemo list`` and ``avemo features`` as a user sees them."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_runner_plugin  # noqa: F401 - registers test_wavstats in this process
from test_runner_plugin import make_wav_corpus

from avemo.cli import LISTS, main
from avemo.data.store import ClipFeatures, make_provenance, write_clips


@pytest.fixture
def feature_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    clips = [
        ClipFeatures(
            "a",
            rng.random((4, 3, 2)).astype(np.float16),
            np.arange(4) / 25,
            np.array([1, 1, 0, 1], bool),
        ),
        ClipFeatures.empty("b", (3, 2), "no_face", "no face in 50 frames", np.float16),
        ClipFeatures.empty("c", (3, 2), "error", "decode failed: InvalidDataError"),
        ClipFeatures(
            "d", rng.random((2, 3, 2)).astype(np.float16), np.arange(2) / 25, np.ones(2, bool)
        ),
    ]
    prov = make_provenance(
        "face_x",
        {"detector": {"name": "mtcnn", "thresholds": [0.6, 0.7]}},
        {"onet": "ab" * 32},
        25.0,
        {"torch": "2.14.1"},
    )
    return write_clips(tmp_path / "face_x.h5", clips, prov)


def test_inspect_shows_provenance_shapes_and_status_counts(feature_file, capsys) -> None:
    assert main(["inspect", str(feature_file)]) == 0
    out = capsys.readouterr().out
    assert "feature set  face_x" in out and "contiguous" in out
    assert "clips        4" in out
    assert "rows         6   row shape [3, 2]   dtype float16" in out
    assert "status       error=1, no_face=1, ok=2" in out
    assert "valid rows   5 / 6" in out and "rate (Hz)    25.0" in out
    assert '"thresholds": [0.6, 0.7]' in out and '"onet": "' + "ab" * 32 in out
    assert '"torch": "2.14.1"' in out
    assert "no_face   b: no face in 50 frames" in out and "error     c: decode failed" in out


def test_inspect_bad_paths_are_one_line_errors(tmp_path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "absent.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.h5").write_text("not hdf5")
    assert main(["inspect", str(tmp_path / "junk.h5")]) == 2
    err = capsys.readouterr().err
    assert "avemo inspect: error:" in err and "not a readable HDF5 feature file" in err


def test_inspect_console_script(feature_file) -> None:
    exe = Path(sys.executable).with_name("avemo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "avemo.cli"]
    res = subprocess.run(
        [*cmd, "inspect", str(feature_file)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "status       error=1, no_face=1, ok=2" in res.stdout


# one entry each subject must list, named from the papers / packages the project ports (not
# read back from the registries), so an empty or truncated listing fails
KNOWN = {
    "datasets": {"ravdess", "cremad", "emodb", "affwild2", "recola", "demo"},
    "feature-sets": {"test_wavstats", "logmel", "vggish", "panns_cnn14", "face_fer2013"},
    "detectors": {"mtcnn", "blazeface"},
    "backbones": {"ir50", "vggface2_resnet50", "hsemotion_enet_b0", "fer2013_minixception"},
    "clip-backbones": {"r2plus1d_18"},
    "identities": {"dlib_resnet"},
    "audio": {"panns_cnn14"},
    "models": {"jca", "lfan", "zhou", "late", "unimodal"},
    "temporal": {"tcn", "bilstm", "transformer", "mean"},
    "fusion": {"concat", "fbp"},
    "encoders": {"identity", "linear", "layer_weights"},
    "losses": {"ccc", "cross_entropy", "mse"},
    "tasks": {"clip", "frame"},
    "optimizers": {"adam", "adamw", "sgd"},
    "schedules": {"cosine", "jca_reference", "none", "plateau"},
    "weights": {"mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "vggish", "panns_cnn14", "ir50"},
    "configs": {"zhou_self_fbp", "demo_fbp", "jca", "lfan"},
    "grids": {"demo", "zhou"},
}


def test_every_list_subject_has_known_entries() -> None:
    assert set(KNOWN) == set(LISTS) | {"configs", "grids"}


@pytest.mark.parametrize("what", sorted(KNOWN))
def test_list_names_every_registered_entry(what, capsys) -> None:
    assert main(["list", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert len(names) == len(set(names)), "an entry listed twice"
    assert KNOWN[what] <= set(names), f"avemo list {what} misses {KNOWN[what] - set(names)}"
    if what in LISTS:  # everything registered is listed (after the stage's load_all)
        mod_name, attr, *fillers = LISTS[what]
        for m in [*fillers, mod_name]:
            mod = importlib.import_module(m)
            if hasattr(mod, "load_all"):
                mod.load_all()
        assert set(names) == set(getattr(importlib.import_module(mod_name), attr))
    for line in lines:
        assert len(line.split()) >= 2, f"no description: {line!r}"


def test_features_command_mismatch_and_new_on_mismatch(tmp_path, capsys) -> None:
    manifest = make_wav_corpus(tmp_path / "wavs", n=5, broken=(2,))
    out = tmp_path / "feat"
    base = ["features", "-m", str(manifest), "-s", "test_wavstats", "-o", str(out), "-q"]
    assert main(base) == 0
    assert capsys.readouterr().out.strip() == f"test_wavstats: {out / 'test_wavstats.h5'}"
    assert main([*base, "--set", "test_wavstats:hop_s=0.02"]) == 2
    err = capsys.readouterr().err
    assert "avemo features: error:" in err and "config.hop_s: cached 0.01 != requested 0.02" in err
    assert main([*base, "--set", "test_wavstats:hop_s=0.02", "--new-on-mismatch"]) == 0
    printed = capsys.readouterr().out.strip().split(": ", 1)[1]
    assert Path(printed).name.startswith("test_wavstats-") and Path(printed).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(["test_wavstats.h5", Path(printed).name])
    assert main(["inspect", printed]) == 0
    assert '"hop_s": 0.02' in capsys.readouterr().out


def test_features_unknown_set_lists_known_ones(tmp_path, capsys) -> None:
    manifest = make_wav_corpus(tmp_path / "wavs", n=2, broken=())
    assert main(["features", "-m", str(manifest), "-s", "nope", "-o", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "unknown feature set 'nope'" in err and "test_wavstats" in err
