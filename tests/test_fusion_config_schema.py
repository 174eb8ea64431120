"""Config mistakes are refused up front: exit 2, one message naming the key, nothing written.

Every mistake from issue 11 has a test here, run through the real ``avemo`` entry point on the
packaged configs (no features are needed: the checks happen before any file is read).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from avemo.cli import main
from avemo.fusion.config import ConfigError, config_dict, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "workflows" / "configs"
DEMO = CONFIGS / "demo_fbp.yaml"
ZHOU = CONFIGS / "zhou_self_fbp.yaml"


def _refused(capsys, tmp_path, argv: list[str], *needles: str) -> str:
    """Run ``avemo ARGV``; expect exit 2, a single stderr line naming every needle, no files."""
    out_dir = tmp_path / "runs"
    rc = main([*argv, f"output.dir={out_dir}"] if argv[0] == "fuse-train" else argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    assert not out_dir.exists()
    return err


@pytest.mark.parametrize(
    "override, needles",
    [
        ("trainer.max_epoch=5", ["trainer.max_epoch", "did you mean max_epochs"]),
        ("data.batchsize=4", ["data.batchsize", "did you mean batch_size"]),
        ("trainer.max_epochs=abc", ["trainer.max_epochs", "integer", "'abc'"]),
        ("optim.lr=-1", ["optim.lr", "greater than 0"]),
        ("data.batch_size=0", ["data.batch_size", "greater than or equal to 1"]),
        ("data.modality_dropout=1.5", ["data.modality_dropout"]),
        ("trainer.early_stopping.patience=0", ["trainer.early_stopping.patience"]),
        ("split.method=random", ["split.method", "official"]),
        ("task.type=frme", ["task.type", "did you mean frame"]),
        ("model.name=zhuo", ["model.name", "did you mean zhou"]),
        ("model.visul=face", ["model.visul", "did you mean visual"]),
        ("model.fusion.kk=3", ["model.fusion.kk", "did you mean k"]),
        ("model.temporal=fan_slef", ["model.temporal", "did you mean fan_self"]),
        ("model.temporal.dropot=0.2", ["model.temporal.dropot", "did you mean dropout"]),
        (
            "model.encoder.per_modality.audio.chanels=[8]",
            ["model.encoder.per_modality.audio.chanels", "did you mean channels"],
        ),
        ("model.head.hiden=[8]", ["model.head.hiden", "did you mean hidden"]),
        ("loss.label_smoothin=0.1", ["loss.label_smoothin", "did you mean label_smoothing"]),
        ("optim.momentum=0.5", ["optim.momentum"]),
        ("optim.name=adamm", ["optim.name", "did you mean adam"]),
        ("schedule.factr=0.5", ["schedule.factr", "did you mean factor"]),
        ("schedule.max_epochs=3", ["schedule.max_epochs", "set by the trainer"]),
        # option values against the constructor's annotations, probabilities in [0, 1]
        ("model.fusion.k=abc", ["model.fusion.k", "valid integer", "'abc'"]),
        ("model.fusion.dropout=-0.1", ["model.fusion.dropout", "must be in [0, 1]"]),
        ("loss.label_smoothing=1.5", ["loss.label_smoothing", "must be in [0, 1]"]),
        ("schedule.factor=abc", ["schedule.factor", "valid number"]),
        ("model.head.hidden=abc", ["model.head.hidden", "valid list"]),
    ],
)
def test_fuse_train_refuses_a_mistake(capsys, tmp_path, override, needles):
    _refused(capsys, tmp_path, ["fuse-train", "-c", str(ZHOU), override], *needles)


def test_two_mistakes_in_one_command_are_both_named(capsys, tmp_path):
    err = _refused(
        capsys,
        tmp_path,
        ["fuse-train", "-c", str(DEMO), "trainer.max_epoch=5", "data.batchsize=4"],
        "max_epochs",
        "batch_size",
    )
    assert err.startswith("avemo fuse-train: error: ")


def test_a_new_name_replaces_the_section_for_dotted_overrides_too(capsys):
    assert main(["fuse-train", "-c", str(ZHOU), "--print-config", "model.fusion.name=concat"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["fusion"] == {"name": "concat"}
    # options given with the new name survive, in either order; the same name keeps the rest
    for order in (
        ["model.fusion.dropout=0.3", "model.fusion.name=concat"],
        ["model.fusion.name=concat", "model.fusion.dropout=0.3"],
    ):
        assert load_config(ZHOU, order).model.fusion == {"name": "concat", "dropout": 0.3}
    assert load_config(ZHOU, ["model.fusion.name=fbp"]).model.fusion["o"] == 1000
    # a bare name that gets an option becomes a section
    rel = load_config(CONFIGS / "zhou_relation_concat.yaml", ["model.temporal.dropout=0.2"])
    assert rel.model.temporal == {"name": "fan_relation", "dropout": 0.2}


def _printed(capsys, *argv: str) -> dict:
    assert main(["fuse-train", "-c", *argv, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("config", ["speech_emotion", str(ZHOU)])
def test_each_override_form_changes_only_what_it_names(capsys, config):
    """One test per form: the printed config equals the file's own plus exactly that change."""
    plain = _printed(capsys, config)

    def changed(*overrides: str) -> dict:
        got = _printed(capsys, config, *overrides)
        return {k: got[k] for k in got if got[k] != plain.get(k)}

    # top-level scalar: `name=` renames the run and keeps everything else (it used to wipe it)
    assert changed("name=my_run") == {"name": "my_run"}
    assert changed("seed=7") == {"seed": 7}
    # nested scalar: only that key of the section
    assert changed("trainer.max_epochs=3") == {"trainer": {**plain["trainer"], "max_epochs": 3}}
    # list: replaced whole, as YAML reads it
    assert changed("data.classes=[sad, angry]")["data"] == {
        **plain["data"],
        "classes": ["sad", "angry"],
    }
    # a named section given another name: that section alone is replaced
    got = changed("optim.name=sgd")
    assert set(got) == {"optim"} and got["optim"]["name"] == "sgd"
    assert got["optim"]["lr"] == load_config({"optim": {"name": "sgd"}, **_minimal()}).optim.lr


def _minimal() -> dict:
    return {
        "data": {"manifest": "m.csv", "features": {"audio": "a.h5"}},
        "model": {"name": "unimodal"},
    }


def test_an_unknown_override_key_is_named_with_a_suggestion(capsys, tmp_path):
    _refused(
        capsys,
        tmp_path,
        ["fuse-train", "-c", "speech_emotion", "name=my_run", "trainer.max_epoch=5"],
        "trainer.max_epoch",
        "did you mean max_epochs",
    )


def test_print_config_is_the_resolved_config_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "fuse-train",
                "-c",
                str(DEMO),
                "--print-config",
                "optim.lr=3e-4",
                "trainer.max_epochs=2",
            ]
        )
        == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    want = config_dict(load_config(DEMO, ["optim.lr=3e-4", "trainer.max_epochs=2"]))
    assert printed == {k: v for k, v in want.items() if not k.startswith("_")}
    assert printed["optim"]["lr"] == 3e-4 and printed["data"]["batch_size"] == 8
    assert printed["trainer"]["loggers"] == ["csv"]  # schema defaults are spelled out
    assert list(tmp_path.iterdir()) == []


def test_relative_paths_are_relative_to_the_file_that_names_them(tmp_path, monkeypatch):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "b.yaml").write_text(
        yaml.safe_dump(
            {
                "data": {
                    "manifest": "m.csv",
                    "features": {"face": "../f/face.h5", "audio": "a.h5"},
                },
                "model": {"name": "zhou"},
            }
        )
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "r.yaml").write_text(
        yaml.safe_dump({"base": "../base/b.yaml", "data": {"features": {"audio": "mine/a.h5"}}})
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(tmp_path / "run" / "r.yaml", ["data.features.extra=x.h5"])
    assert cfg.data.manifest == str(tmp_path / "base" / "m.csv")
    assert cfg.data.features == {
        "face": str(tmp_path / "f" / "face.h5"),
        "audio": str(tmp_path / "run" / "mine" / "a.h5"),
        "extra": str(elsewhere / "x.h5"),
    }  # overrides: the cwd
    assert cfg.output.dir == str(elsewhere / "runs")  # defaults: the cwd


def test_the_grid_dry_run_refuses_a_misspelled_axis_key(capsys, tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "name": "typo",
                "base": str(DEMO),
                "axes": {"epochs": {"key": "trainer.max_epoch", "values": [2, 4]}, "seed": [0, 1]},
            }
        )
    )
    err = _refused(
        capsys,
        tmp_path,
        ["ablate", "-g", str(grid), "--dry-run", "-o", str(tmp_path / "runs")],
        "trainer.max_epoch",
        "did you mean max_epochs",
        "4 of 4 cell(s)",
    )
    assert err.startswith("avemo ablate: error: ")


def test_the_packaged_grids_resolve_paths_relative_to_the_grid_file():
    from avemo.workflows.ablation import load_grid, resolve_cell_config

    g = load_grid(REPO / "workflows" / "grids" / "zhou.yaml")
    audio = {resolve_cell_config(g, c).data.features["audio"] for c in g.cells()}
    assert audio == {
        str(REPO / "features" / "afew" / f"{n}.h5")  # set names in the base's folder
        for n in ("logmel", "spectrogram", "speech_embedding")
    }
    assert g.out_dir == Path("runs/ablate/zhou")


def test_library_callers_get_config_error():
    with pytest.raises(ConfigError, match="trainer.max_epoch: unknown key"):
        load_config(ZHOU, ["trainer.max_epoch=5"])


def test_the_real_command_exits_2_without_traceback(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "avemo",
            "fuse-train",
            "-c",
            str(ZHOU),
            "optim.lr=-1",
            f"output.dir={tmp_path / 'runs'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        "avemo fuse-train: error: optim.lr: input should be greater than 0, got -1"
    ]
    assert list(tmp_path.iterdir()) == []
