"""``AVEMO_*`` variables: declared once (avemo.settings), validated, read at call time only there."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

from avemo import settings
from avemo.cli import main

REPO = Path(__file__).resolve().parents[1]

#: A value each declared variable refuses (the CLI says so in one line, exit 2).
BAD = {
    "AVEMO_PLUGINS": "pkg.ok,not-a-module",
    "AVEMO_ALLOW_DOWNLOAD": "maybe",
    "AVEMO_OFFLINE": "2",
    "AVEMO_DEVICE": "tpu",
    "AVEMO_MALLOC": "jemalloc",
    "AVEMO_PROGRESS": "loud",
    "AVEMO_PROGRESS_EVERY_S": "0",
    "AVEMO_DECODE_WORKERS": "-1",
    "AVEMO_SHARD_CLIPS": "many",
    "AVEMO_RANK_TIMEOUT_S": "-5",
    "AVEMO_GRID_STACK": "sometimes",
    "AVEMO_GRID_WORKERS": "0",
    "AVEMO_SHARD_WAIT_S": "soon",
    "AVEMO_TEST_SLOW_WRITE": "-0.1",
    "AVEMO_KILL_SEED": "1.5",
}
#: Path-valued variables: every string is a path; whether it exists is checked where it is
#: used, with that use's message (a missing weights file, an absent data folder).
PATHS = {
    "AVEMO_CACHE": "cache",
    "AVEMO_BENCH_DIR": "bench_dir",
    "AVEMO_DEMO_DIR": "demo_dir",
    "AVEMO_EMODB": "emodb",
    "AVEMO_RAVDESS_A05": "ravdess_a05",
}


def test_every_declared_variable_is_covered_here() -> None:
    family = settings.WEIGHTS_PREFIX + "<NAME>"
    assert set(BAD) | set(PATHS) | {family} == set(settings.VARIABLES)


@pytest.mark.parametrize("var", sorted(BAD))
def test_a_bad_value_is_one_line_naming_the_variable_exit_2(
    var: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(var, BAD[var])
    assert main(["list", "feature-sets"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"avemo: error: {var}: ") and repr(BAD[var]) in err
    with pytest.raises(settings.SettingError, match=var):
        settings.current()  # the library raises it too (UserError: exit 2 from any entry point)


@pytest.mark.parametrize("var", sorted(PATHS))
def test_a_path_variable_is_read_as_given(
    var: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(var, str(tmp_path / "x y"))
    assert getattr(settings.current(), PATHS[var]) == tmp_path / "x y"


def test_read_at_call_time_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    default = settings.Settings.model_fields["shard_clips"].default
    monkeypatch.delenv("AVEMO_SHARD_CLIPS", raising=False)
    assert settings.current().shard_clips == default
    monkeypatch.setenv("AVEMO_SHARD_CLIPS", "7")
    assert settings.current().shard_clips == 7
    monkeypatch.setenv("AVEMO_SHARD_CLIPS", " ")
    assert settings.current().shard_clips == default
    monkeypatch.setenv("AVEMO_PLUGINS", " a.b , c ,")
    assert settings.current().plugins == ("a.b", "c")
    monkeypatch.setenv("AVEMO_MALLOC", "System")
    assert settings.current().malloc == "system"


def test_consumers_read_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from avemo.data.pypi_fetch import cache_dir
    from avemo.data.registry import env_plugins
    from avemo.extract.video.pipeline import default_workers
    from avemo.progress import Progress

    monkeypatch.setenv("AVEMO_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("AVEMO_DECODE_WORKERS", "0")
    monkeypatch.setenv("AVEMO_PROGRESS_EVERY_S", "2.5")
    monkeypatch.setenv("AVEMO_PLUGINS", "my.mod")
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()
    assert default_workers() == 0
    assert Progress("x", 1).every_s == 2.5
    assert env_plugins() == ["my.mod"]


def test_near_miss_names_warn_with_did_you_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVEMO_SHARD_CLIP", "3")
    with pytest.warns(settings.UnknownSettingWarning, match="did you mean AVEMO_SHARD_CLIPS"):
        settings.current()
    monkeypatch.delenv("AVEMO_SHARD_CLIP")
    monkeypatch.setenv("AVEMO_WEIGHT_VGGISH", "/x.pth")
    with pytest.warns(settings.UnknownSettingWarning, match="did you mean AVEMO_WEIGHTS_VGGISH"):
        settings.current()
    monkeypatch.delenv("AVEMO_WEIGHT_VGGISH")
    monkeypatch.setenv("AVEMO_WEIGHTS_ANY_NAME", "/x.pth")  # the family: never a warning
    monkeypatch.setenv("AVEMO_ZZZQQQ", "1")  # nothing close: the user's own variable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings.current()


def test_cli_prints_a_near_miss_as_one_warning_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AVEMO_OFLINE", "1")
    assert main(["list", "feature-sets"]) == 0
    err = capsys.readouterr().err
    assert (
        "avemo: warning: AVEMO_OFLINE: not a variable avemo reads, did you mean AVEMO_OFFLINE?"
        in err
    )


def test_weights_family(monkeypatch: pytest.MonkeyPatch) -> None:
    from avemo.extract.weights import WEIGHTS

    assert settings.weights_var("arcface-w600k.r50") == "AVEMO_WEIGHTS_ARCFACE_W600K_R50"
    monkeypatch.setenv("AVEMO_WEIGHTS_VGGISH", "~/mine.pth")
    assert (
        settings.current().weights_override("AVEMO_WEIGHTS_VGGISH")
        == Path("~/mine.pth").expanduser()
    )
    assert settings.current().weights_override("AVEMO_WEIGHTS_OTHER") is None
    for name in WEIGHTS:  # every registered weight's variable is one of the family
        assert WEIGHTS.get(name).env_var.startswith(settings.WEIGHTS_PREFIX)


def test_table_lists_every_variable_with_a_description() -> None:
    rows = settings.table()
    assert [r[0] for r in rows] == list(settings.VARIABLES)
    assert all(r[2] for r in rows)


# ----------------------------------------------------------------------------- who reads them

#: Files that still read ``AVEMO_*`` variables themselves, each with why. Only declared names.
ALLOWED: dict[str, str] = {}


def _roots() -> list[str]:
    """The package's folders, from setup.py's ROOTS (the one map of folders onto avemo.*)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ROOTS":
            return sorted(set(ast.literal_eval(node.value).values()))
    raise AssertionError("setup.py has no ROOTS")


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _env_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, variable name or '?') of every ``os.environ.get/[]/in`` and ``os.getenv``."""
    found: list[tuple[int, ast.AST | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if (f.attr in ("get", "pop", "setdefault") and _is_environ(f.value)) or (
                f.attr == "getenv"
            ):
                found.append((node.lineno, node.args[0] if node.args else None))
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            if isinstance(node.ctx, ast.Load):
                found.append((node.lineno, node.slice))
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            found.append((node.lineno, node.left))
    out = []
    for line, arg in found:
        name = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "?"
        out.append((line, name))
    return out


def test_only_settings_reads_avemo_variables() -> None:
    offenders = []
    for root in _roots():
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel == "avemo/settings.py":
                continue
            for line, name in _env_reads(ast.parse(path.read_text(), rel)):
                if name != "?" and not name.startswith(settings.PREFIX):
                    continue  # RANK, INSIGHTFACE_HOME ...: not ours
                if rel in ALLOWED or rel.startswith("workflows/ablation/"):
                    if name == "?" or name in settings.VARIABLES:
                        continue
                offenders.append(f"{rel}:{line} reads {name}")
    assert not offenders, "read AVEMO_* through avemo.settings.current(): " + "; ".join(offenders)


def test_the_docs_table_lists_every_variable() -> None:
    page = (REPO / "docs" / "reference" / "settings.md").read_text()
    listed = [line.split("`")[1] for line in page.splitlines() if line.startswith("| `AVEMO_")]
    assert listed == list(settings.VARIABLES)
