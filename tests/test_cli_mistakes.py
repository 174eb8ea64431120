"""One test per kind of user mistake: exit 2, one line naming the thing, no traceback, nothing
written. Plus the one-command surface (list configs/grids, packaged names, --help examples)
and two runs on one output folder at once."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_runner_plugin  # noqa: F401 - registers test_wavstats in this process
from test_runner_plugin import make_wav_corpus, plugin_env

from avemo.cli import build_parser, main, packaged_dir
from avemo.data.store import FeatureFile
from avemo.extract.runner import output_lock

AVEMO = Path(sys.executable).with_name("avemo")
CMD = [str(AVEMO)] if AVEMO.exists() else [sys.executable, "-m", "avemo.cli"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_wav_corpus(tmp_path_factory.mktemp("wavs"), n=6, broken=(2,))


def refused(capsys, argv: list[str], out: Path, *needles: str) -> str:
    """``avemo argv`` exits 2 with one error line holding every needle, and writes nothing."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"avemo {argv[0]}: error:") and "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    return err


def features(
    manifest: Path, out: Path, *extra: str, sets: tuple[str, ...] = ("logmel",)
) -> list[str]:
    argv = ["features", "-m", str(manifest), "-o", str(out), "-q"]
    for s in sets:
        argv += ["-s", s]
    return argv + list(extra)


# ------------------------------------------------------------------ feature-set config values


def test_unknown_key_names_it_and_suggests_the_close_one(manifest, tmp_path, capsys) -> None:
    out = tmp_path / "f"
    refused(
        capsys,
        features(manifest, out, "--set", "logmel:n_mel=40"),
        out,
        "n_mel",
        "feature set logmel",
        "did you mean n_mels?",
    )


def test_out_of_range_value(manifest, tmp_path, capsys) -> None:
    out = tmp_path / "f"
    refused(
        capsys,
        features(manifest, out, "--set", "logmel:n_mels=-3"),
        out,
        "n_mels: must be >= 1",
        "got -3",
    )


def test_wrong_type(manifest, tmp_path, capsys) -> None:
    out = tmp_path / "f"
    refused(
        capsys,
        features(manifest, out, "--set", "logmel:n_mels=forty"),
        out,
        "n_mels: input should be a valid integer",
        "'forty'",
    )


def test_value_outside_the_allowed_ones(manifest, tmp_path, capsys) -> None:
    out = tmp_path / "f"
    refused(
        capsys,
        features(manifest, out, "--set", "logmel:delta_layout=rows"),
        out,
        "delta_layout: must be one of 'channels', 'columns'",
        "'rows'",
    )


def test_a_bad_second_set_stops_the_run_before_the_first_is_written(
    manifest, tmp_path, capsys
) -> None:
    out = tmp_path / "f"
    refused(
        capsys,
        features(manifest, out, "--set", "mfcc:n_mfcc=0", sets=("logmel", "mfcc")),
        out,
        "feature set mfcc",
        "n_mfcc: must be >= 1",
    )


def test_keys_that_only_clash_together(manifest, tmp_path, capsys) -> None:
    out = tmp_path / "f"
    refused(
        capsys,
        features(manifest, out, "--set", "logmel:fmin=4000", "--set", "logmel:fmax=2000"),
        out,
        "fmax (2000.0) must be above fmin (4000.0)",
    )


def test_malformed_set_and_feature_config(manifest, tmp_path, capsys) -> None:
    out = tmp_path / "f"
    refused(capsys, features(manifest, out, "--set", "n_mels=40"), out, "FEATURE_SET:KEY=VALUE")
    refused(capsys, features(manifest, out, "--set", "mfcc:n_mfcc=20"), out, "mfcc", "add -s mfcc")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("- n_mels: 40\n")
    refused(capsys, features(manifest, out, "-c", str(cfg)), out, str(cfg), "must map feature_set")
    refused(
        capsys, features(manifest, out, "-c", str(tmp_path / "absent.yaml")), out, "does not exist"
    )


def test_unknown_feature_set_suggests(manifest, tmp_path, capsys) -> None:
    out = tmp_path / "f"
    refused(
        capsys,
        features(manifest, out, sets=("logmell",)),
        out,
        "unknown feature set 'logmell'",
        "did you mean logmel?",
    )


# ------------------------------------------------------------------ manifests


def test_manifest_option_without_a_value(tmp_path, capsys) -> None:
    out = tmp_path / "m.csv"
    for bad in ("folds", "=5"):
        refused(
            capsys,
            ["manifest", "folder", str(tmp_path), "-o", str(out), "--option", bad],
            out,
            f"--option {bad!r} is not KEY=VALUE",
        )


def test_empty_manifest(tmp_path, capsys) -> None:
    m, out = tmp_path / "m.csv", tmp_path / "f"
    m.write_text("")
    refused(capsys, features(m, out), out, f"manifest {m} is empty")


def test_binary_manifest(tmp_path, capsys) -> None:
    m, out = tmp_path / "m.csv", tmp_path / "f"
    m.write_bytes(Path(sys.executable).resolve().read_bytes()[:4096])
    refused(capsys, features(m, out), out, f"manifest {m} is a binary file")


def test_header_only_manifest(tmp_path, capsys) -> None:
    m, out = tmp_path / "m.csv", tmp_path / "f"
    m.write_text("clip_id,audio,split,subject,label\n")
    refused(capsys, features(m, out), out, "has a header", "but no rows")


def test_unreadable_manifest_path(tmp_path, capsys) -> None:
    out = tmp_path / "f"
    refused(capsys, features(tmp_path / "absent.csv", out), out, "does not exist", "avemo manifest")
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    refused(capsys, features(folder, out), out, "is a folder")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.csv"
        locked.write_text("clip_id,audio,split,subject,label\nc0,a.wav,train,s0,x\n")
        locked.chmod(0)
        refused(capsys, features(locked, out), out, "cannot be read")


def test_a_real_process_prints_one_line_and_exits_2(manifest, tmp_path) -> None:
    out = tmp_path / "f"
    res = subprocess.run(
        [*CMD, *features(manifest, out, "--set", "logmel:n_mel=40")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "Traceback" not in res.stderr
    assert "did you mean n_mels?" in res.stderr and not out.exists()


# ------------------------------------------------------------------ two runs, one output


def _start(argv: list[str]) -> subprocess.Popen:
    """Start ``argv`` and return once it says it is waiting for the output lock."""
    proc = subprocess.Popen(
        argv, env=plugin_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = proc.stderr.readline()
    assert "waiting" in first, first + proc.stderr.read()
    proc.first_line = first  # type: ignore[attr-defined]
    return proc


def _argv(manifest: Path, out: Path) -> list[str]:
    return [
        *CMD,
        "features",
        "-m",
        str(manifest),
        "-s",
        "test_wavstats",
        "-o",
        str(out),
        "-q",
        "--set",
        "test_wavstats:sleep_s=0.1",
        "--shard-clips",
        "2",
    ]


def test_two_runs_on_the_same_output_wait_for_each_other(manifest, tmp_path) -> None:
    """Deterministic: this test holds the output's lock while both runs start, so both must
    wait (naming this PID); then one extracts while the other waits again, and finds every
    clip committed. No "No such file", no traceback, one correct file, nothing left over."""
    out = tmp_path / "f"
    with output_lock(out / "test_wavstats.h5"):
        runs = [_start(_argv(manifest, out)), _start(_argv(manifest, out))]
    for proc in runs:
        _, err = proc.communicate(timeout=600)
        err = proc.first_line + err
        assert proc.returncode == 0, err
        assert f"being written by PID {os.getpid()} on " in err
        assert "No such file" not in err and "Traceback" not in err
    ff = FeatureFile(out / "test_wavstats.h5")
    assert ff.clip_ids == [f"c{i:03d}" for i in range(6)]
    assert ff.status.count("error") == 1 and ff.status.count("ok") >= 4
    assert sorted(p.name for p in out.iterdir()) == ["test_wavstats.h5"]  # no lock, no shards left


def test_second_run_with_no_wait_refuses_naming_the_pid(manifest, tmp_path) -> None:
    out = tmp_path / "f"
    with output_lock(out / "test_wavstats.h5"):
        first = _start(_argv(manifest, out))
        second = subprocess.run(
            [*_argv(manifest, out), "--no-wait"],
            env=plugin_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert f"being written by PID {os.getpid()} on " in second.stderr
    assert "another output folder" in second.stderr
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert FeatureFile(out / "test_wavstats.h5").clip_ids == [f"c{i:03d}" for i in range(6)]


# ------------------------------------------------------------------ one command


def test_list_configs_and_grids(capsys) -> None:
    assert main(["list", "configs"]) == 0
    names = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]
    assert names == sorted(p.stem for p in packaged_dir("configs").glob("*.yaml"))
    assert "demo_fbp" in names
    assert main(["list", "grids"]) == 0
    assert "demo" in [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]


def test_packaged_names_resolve_as_well_as_paths(tmp_path, capsys) -> None:
    p = build_parser()
    a = p.parse_args(["fuse-train", "-c", "demo_fbp"])
    assert Path(a.config) == packaged_dir("configs") / "demo_fbp.yaml"
    assert Path(p.parse_args(["ablate", "-g", "zhou"]).grid) == packaged_dir("grids") / "zhou.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("{}\n")
    assert p.parse_args(["fuse-train", "-c", str(own)]).config == str(own)
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["fuse-train", "-c", "demo_fpb"])
    assert e.value.code == 2
    assert "did you mean demo_fbp?" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["report", "merge", "demo"])
def test_workflow_subcommands_have_help_with_examples(cmd) -> None:
    res = subprocess.run([*CMD, cmd, "--help"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"usage: avemo {cmd}" in res.stdout and f"examples:\n  avemo {cmd}" in res.stdout


def test_every_option_has_help_and_every_command_examples() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) >= {
        "manifest",
        "features",
        "fuse-train",
        "ablate",
        "report",
        "merge",
        "demo",
        "inspect",
        "list",
    }
    assert (
        "emodb" not in sub.choices
    )  # an experiment (experiments/emodb, `make emodb`), not a command
    for name, sp in sub.choices.items():
        assert sp.epilog and sp.epilog.startswith("examples:"), name
        for action in sp._actions:
            assert action.help, f"avemo {name} {action.option_strings or action.dest}: no help"


def test_report_on_a_folder_that_is_not_a_grid(tmp_path, capsys) -> None:
    out = tmp_path / "nogrid"
    out.mkdir()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a grid results folder" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "module,args",
    [
        ("report", ["{tmp}/no-grid"]),
        ("merge", ["{tmp}/no-grid"]),
        ("ablate", ["{tmp}/no-grid.yaml"]),
    ],
)
def test_python_m_workflow_mains_turn_user_errors_into_one_line(module, args, tmp_path, capsys):
    """``python -m avemo.workflows.X`` (torchrun/srun run these) answers like ``avemo X``."""
    import importlib

    main = importlib.import_module(f"avemo.workflows.{module}").main
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"avemo {module}: error: "), err
    assert not any(tmp_path.iterdir()), "nothing written"


def test_fuse_train_with_a_stream_never_extracted_names_the_set_and_the_way_out(
    capsys, tmp_path
) -> None:
    """A config whose stream's feature file was never built (e.g. speech_emotion's d-vectors):
    one line naming ``data.features.<stream>``, the stage-one set to build and ``=null``."""
    import yaml
    from _fusion_data import clip_config, clip_corpus

    c = clip_corpus(tmp_path, n_clips=12)
    cfg = clip_config(c, tmp_path)
    cfg["data"]["features"]["speaker"] = str(tmp_path / "feats" / "speaker_ge2e.h5")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    refused(
        capsys,
        ["fuse-train", "-c", str(path), "-q"],
        tmp_path / "runs",
        "data.features.speaker",
        "avemo features -s speaker_ge2e",
        "data.features.speaker=null",
    )
