"""avemo: audio-video emotion recognition from cached features.

Stage one extracts feature sets once into HDF5 (``features``); stage two trains fusion models
from that cache in seconds (``fuse-train``, ``ablate`` grids, ``report``, ``merge``).
Every user mistake is one message and exit status 2; ``-q`` / ``-v`` set how much is said.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import avemo.workflows
from avemo import __version__, settings
from avemo.errors import (
    DamagedFileError,
    DiskFullError,
    Fault,
    UsageError,
    UserError,
    did_you_mean,
    is_disk_full,
)
from avemo.progress import setup_logging

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(
    name: str,
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return deco


@command("manifest")
def _manifest(a: argparse.Namespace) -> int:
    from avemo.data.adapters import build_manifest
    from avemo.data.manifest import save_manifest

    df = build_manifest(a.dataset, a.root, **dict(_kv(a.option)))
    save_manifest(df, a.output)
    counts = df["split"].value_counts().to_dict() if "split" in df else {}
    print(f"wrote {a.output}: {len(df)} clips {counts}")
    return 0


@command("features")
def _features(a: argparse.Namespace) -> int:
    import yaml

    from avemo.extract.runner import run_features

    overrides: dict = {}
    if a.config:
        overrides = _read_overrides(a.config)
    for item in a.set or []:
        fs, colon, kv = item.partition(":")
        k, eq, v = kv.partition("=")
        if not (colon and eq and fs and k):
            raise UsageError(
                f"--set {item!r} is not FEATURE_SET:KEY=VALUE (e.g. --set logmel:n_mels=40)"
            )
        try:
            value = yaml.safe_load(v)
        except yaml.YAMLError:
            raise UsageError(f"--set {item!r}: {v!r} is not a YAML value") from None
        overrides.setdefault(fs, {})[k] = value
    files = run_features(
        a.manifest,
        a.feature_set,
        a.output,
        device=a.device,
        overrides=overrides,
        batch_clips=a.batch_clips,
        on_mismatch="new" if a.new_on_mismatch else "error",
        progress=a.verbosity >= 0,
        shard_clips=a.shard_clips,
        compression=a.compression,
        lock_wait_s=0.0 if a.no_wait else None,
    )
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


def _read_overrides(path: str) -> dict:
    """``-c`` of ``features``: a YAML mapping feature_set -> {key: value}."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UsageError(
            f"feature config {p} does not exist (a YAML mapping feature_set: {{key: value}})"
        )
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"feature config {p} is not YAML: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UsageError(
            f"feature config {p} must map feature_set: {{key: value}}, e.g. "
            "'logmel: {n_mels: 40}'"
        )
    return data


@command("fuse-train")
def _fuse_train(a: argparse.Namespace) -> int:
    if a.print_config:
        from avemo.fusion.config import config_yaml, load_config

        print(config_yaml(load_config(a.config, a.overrides)), end="")
        return 0
    from avemo.fusion.train import train_from_config

    quiet = ["trainer.progress=none", "output.verbose=false"] if a.verbosity < 0 else []
    result = train_from_config(a.config, [*a.overrides, *quiet])
    print(f"run folder: {result['run_dir']}")
    for k, v in sorted(result.get("metrics", {}).items()):
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    return 0


@command("ablate")
def _ablate(a: argparse.Namespace) -> int:
    from avemo.workflows.ablation import run_grid

    result = run_grid(a.grid, out_dir=a.output, dry_run=a.dry_run, overrides=a.overrides)
    print(f"results: {result['out_dir']}")
    return 0


@command("inspect")
def _inspect(a: argparse.Namespace) -> int:
    from avemo.data.store import describe, verify_file

    if a.montage is not None or a.out is not None:
        from avemo.extract.video.montage import write_montage

        if a.montage is None or a.out is None or len(a.files) != 1:
            raise UsageError(
                "a montage needs one FILE, --montage CLIP_ID and -o OUT.png, e.g. "
                "avemo inspect face_crops.h5 --montage clip01 -o clip01.png"
            )
        print(f"montage of {a.montage}: {write_montage(a.files[0], a.montage, a.out)}")
        return 0
    damaged = []
    for p in a.files:
        print(describe(p))
        if a.verify:
            bad = verify_file(p)
            if bad is None:
                print("checksums    none stored (written before avemo kept them): cannot verify")
            elif bad:
                damaged.append(p)
                print(
                    f"checksums    DAMAGED: {len(bad)} clip(s) no longer match: "
                    f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}"
                )
            else:
                print("checksums    every clip matches")
    if damaged:
        raise DamagedFileError(
            f"{len(damaged)} damaged file(s): {', '.join(map(str, damaged))}; rerun "
            "`avemo features` with the same options to extract the damaged clips again"
        )
    return 0


LISTS = {
    "datasets": ("avemo.data.adapters", "DATASETS"),
    "feature-sets": ("avemo.extract.registry", "FEATURE_SETS"),
    "detectors": ("avemo.extract.registry", "DETECTORS"),
    "backbones": ("avemo.extract.registry", "BACKBONES"),
    "clip-backbones": ("avemo.extract.registry", "CLIP_BACKBONES"),
    "identities": ("avemo.extract.registry", "IDENTITIES"),
    "audio": ("avemo.extract.registry", "AUDIO"),
    "models": ("avemo.fusion.registry", "MODELS"),
    "temporal": ("avemo.fusion.registry", "TEMPORAL"),
    "fusion": ("avemo.fusion.registry", "FUSION"),
    "encoders": ("avemo.fusion.registry", "ENCODERS"),
    "losses": ("avemo.fusion.registry", "LOSSES"),
    "tasks": ("avemo.fusion.registry", "TASKS"),
    "optimizers": ("avemo.fusion.registry", "OPTIMIZERS"),
    "schedules": ("avemo.fusion.registry", "SCHEDULES"),
    "weights": ("avemo.extract.weights", "WEIGHTS", "avemo.extract.registry"),  # (+ what fills it)
}


PACKAGED_FILES = {
    "configs": "run configs (fuse-train -c NAME)",
    "grids": "ablation grids (ablate -g NAME)",
}


def packaged_dir(kind: str) -> Path:
    """``workflows/configs`` or ``workflows/grids`` of the installed package."""
    return Path(avemo.workflows.__file__).resolve().parent / kind


def packaged(kind: str) -> Callable[[str], str]:
    """argparse ``type``: a path, or the NAME of a packaged config / grid (``zhou_self_fbp``)."""

    def resolve(value: str) -> str:
        if Path(value).expanduser().exists():
            return str(Path(value).expanduser())
        folder = packaged_dir(kind)
        cand = folder / (value if value.endswith(".yaml") else f"{value}.yaml")
        if cand.is_file():
            return str(cand)
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a file nor a packaged {kind[:-1]}{did_you_mean(value, names)} "
            f"Packaged: {', '.join(names)} (see `avemo list {kind}`)"
        )

    return resolve


def _first_line(path: Path, width: int = 90) -> str:
    """What a packaged YAML is for: its leading comment up to the first full stop, shortened."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("# ").split()
        if words and words[-1].endswith("."):
            break
    text = " ".join(words)
    return text if len(text) <= width else text[: width - 3].rsplit(" ", 1)[0] + " ..."


@command("list")
def _list(a: argparse.Namespace) -> int:
    if a.what in PACKAGED_FILES:
        for p in sorted(packaged_dir(a.what).glob("*.yaml")):
            print(f"{p.stem:<28} {_first_line(p)}")
        return 0
    mod_name, attr, *fillers = LISTS[a.what]
    mod = importlib.import_module(mod_name)
    for m in (*(importlib.import_module(f) for f in fillers), mod):
        if hasattr(m, "load_all"):
            m.load_all()
    registry = getattr(mod, attr)
    for name, doc in registry.describe():
        if a.what == "feature-sets":
            print(f"{name:<28} {_rate_words(registry, name):<14} {doc}")
        else:
            print(f"{name:<28} {doc}")
    return 0


def _rate_words(registry: Any, name: str) -> str:
    """A feature set's row rate with its default config: rows per second, or per video frames."""
    try:
        fs = registry.build(name, {}, "cpu")
    except Exception:  # a set that needs user weights or an extra to build: its doc says the rate
        return "see doc"
    try:
        rate, hop = fs.rate_hz, fs.config.get("hop")
    finally:
        getattr(fs, "close", lambda: None)()
    if rate:
        return f"{rate:g} Hz"
    if getattr(fs, "per_clip", False):
        return "per clip"
    return f"frames/{hop}" if isinstance(hop, int) else "video frames"  # windowed: a row every hop


def _kv(items: Sequence[str] | None) -> list[tuple[str, str]]:
    """``--option KEY=VALUE`` items as pairs; one without ``KEY=`` is the user's mistake."""
    pairs = []
    for item in items or []:
        k, eq, v = item.partition("=")
        if not (eq and k):
            raise UsageError(f"--option {item!r} is not KEY=VALUE (e.g. --option folds=5)")
        pairs.append((k, v))
    return pairs


EXAMPLES = {
    "manifest": """examples:
  avemo manifest ravdess /data/RAVDESS -o manifests/ravdess.csv
  avemo manifest csv my_clips.csv -o manifests/mine.csv --option base=/data/mine""",
    "features": """examples:
  avemo features -m manifests/ravdess.csv -s face_faceapi -s logmel -o features/ravdess
  avemo features -m manifests/ravdess.csv -s logmel -o features/ravdess --set logmel:n_mels=40
  avemo features -m manifests/ravdess.csv -s face_faceapi -o features/ravdess --device cuda
  torchrun --nproc-per-node 4 -m avemo.cli features -m M.csv -s face_faceapi -o features/x""",
    "fuse-train": """examples:
  avemo fuse-train -c zhou_self_fbp trainer.max_epochs=5
  avemo fuse-train -c my_run.yaml data.features.face=features/x/face_faceapi.h5
  avemo fuse-train -c demo_fbp --print-config""",
    "ablate": """examples:
  avemo ablate -g zhou --dry-run
  avemo ablate -g my_grid.yaml -o runs/ablate/mine""",
    "report": """examples:
  avemo report runs/ablate/demo
  avemo report runs/ablate/zhou --html""",
    "merge": """examples:
  avemo merge runs/ablate/zhou
  avemo merge runs/ablate/zhou --method mean""",
    "demo": """examples:
  avemo demo
  avemo demo -o /tmp/avemo-demo trainer.max_epochs=2""",
    "predict": """examples:
  avemo predict runs/demo_fbp/20261127-101500 my_video.mp4
  avemo predict RUN_DIR videos/ -o out/predict --plot --format parquet
  avemo predict RUN_DIR manifests/new.csv --checkpoint last --device cuda""",
    "inspect": """examples:
  avemo inspect features/ravdess/face_faceapi.h5
  avemo inspect features/ravdess/*.h5 | less
  avemo inspect features/ravdess/face_crops.h5 --montage 01-01-03-01-01-02-05 -o crops.png""",
    "list": """examples:
  avemo list feature-sets
  avemo list configs
  avemo list grids""",
}


def _sub(sub, name: str, help: str, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help[:1].upper() + help[1:] + ".",
        epilog=EXAMPLES[name],
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


WORKFLOWS = {
    "report": "redraw the Markdown/PNG report of a grid results folder",
    "merge": "merge a grid's fold models (CCC centering) and score them",
    "demo": "the whole pipeline on the built-in demo corpus",
    "predict": "apply a trained run to new media files, folders or manifests",
}


def _workflow(name: str) -> Callable[[argparse.Namespace], int]:
    """A workflow command: its module's ``run(args)``, imported only when it runs."""
    return lambda a: importlib.import_module(f"avemo.workflows.{name}").run(a)


COMMANDS.update({name: _workflow(name) for name in WORKFLOWS})


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; ``only``: the command about to run (the other workflows' options
    are then not imported)."""
    common = argparse.ArgumentParser(add_help=False)
    talk = common.add_mutually_exclusive_group()
    talk.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=-1,
        default=0,
        help="warnings and errors only (no progress)",
    )
    talk.add_argument(
        "-v", "--verbose", dest="verbosity", action="store_const", const=1, help="also debug notes"
    )
    p = argparse.ArgumentParser(
        prog="avemo",
        description=__doc__,
        epilog="`avemo COMMAND --help` shows each command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"avemo {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    m = _sub(sub, "manifest", "build a manifest from a dataset on disk", common)
    m.add_argument("dataset", help="adapter name (see `avemo list datasets`)")
    m.add_argument("root", help="dataset root folder (or CSV for the csv adapter)")
    m.add_argument("-o", "--output", required=True, help="manifest path (.csv or .parquet)")
    m.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="adapter option (repeatable)"
    )

    f = _sub(sub, "features", "extract feature sets into OUT/<feature_set>.h5 (resumes)", common)
    f.add_argument(
        "-m", "--manifest", required=True, help="manifest .csv or .parquet (from `avemo manifest`)"
    )
    f.add_argument(
        "-s",
        "--feature-set",
        action="append",
        required=True,
        help="feature set name (repeatable; see `avemo list feature-sets`)",
    )
    f.add_argument("-o", "--output", required=True, help="output folder")
    f.add_argument(
        "--device",
        default="cpu",
        help="auto, cpu, cuda, cuda:N or gpu (no GPU visible: the CPU, with a warning; "
        "avemo.devices)",
    )
    f.add_argument("-c", "--config", help="YAML mapping feature_set -> config overrides")
    f.add_argument(
        "--set",
        action="append",
        metavar="FS:KEY=VALUE",
        help="one config override, value in YAML (repeatable), e.g. logmel:n_mels=40",
    )
    f.add_argument("--batch-clips", type=int, default=8, help="clips per extraction batch")
    f.add_argument(
        "--shard-clips",
        type=int,
        default=None,
        help="clips per committed shard (default $AVEMO_SHARD_CLIPS or 32)",
    )
    f.add_argument(
        "--compression",
        choices=["gzip", "lzf"],
        default=None,
        help="compress the final file (smaller, not memory-mappable)",
    )
    f.add_argument(
        "--new-on-mismatch",
        action="store_true",
        help="when OUT holds the set made with another config, write <set>-<hash>.h5",
    )
    f.add_argument(
        "--no-wait",
        action="store_true",
        help="when another process writes the same output, stop (exit 2) instead of waiting",
    )

    t = _sub(sub, "fuse-train", "train a fusion model on cached features", common)
    t.add_argument(
        "-c",
        "--config",
        required=True,
        type=packaged("configs"),
        help="run config: a YAML path or a packaged NAME (`avemo list configs`)",
    )
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    t.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved, validated config and exit (nothing is trained)",
    )

    g = _sub(sub, "ablate", "run an ablation grid from the cache (resumable)", common)
    g.add_argument(
        "-g",
        "--grid",
        required=True,
        type=packaged("grids"),
        help="grid: a YAML path or a packaged NAME (`avemo list grids`)",
    )
    g.add_argument("-o", "--output", help="results folder (default: from the grid)")
    g.add_argument("--dry-run", action="store_true", help="list cells and missing features only")
    g.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides for every cell (e.g. data.features_dir=features/ravdess)",
    )

    for name, what in WORKFLOWS.items():  # their options live with them (``python -m`` too)
        sp = _sub(sub, name, what, common)
        if only in (None, name):  # import only the one asked for: `avemo inspect` stays quick
            importlib.import_module(f"avemo.workflows.{name}").add_arguments(sp)

    i = _sub(sub, "inspect", "provenance, shapes and per-status counts of feature files", common)
    i.add_argument(
        "files", nargs="+", metavar="FILE", help="feature files (.h5) written by `avemo features`"
    )
    i.add_argument(
        "--montage",
        metavar="CLIP_ID",
        help="draw this clip's aligned face crops over time, with "
        "mask and track (a face_crops file), into -o",
    )
    i.add_argument("-o", "--out", metavar="PNG", help="where --montage writes its picture (.png)")
    i.add_argument(
        "--verify",
        action="store_true",
        help="read every clip and check it against its "
        f"stored checksum (damaged: exit {DamagedFileError.exit_code})",
    )

    ls = _sub(sub, "list", "what is registered, and the packaged configs and grids", common)
    ls.add_argument(
        "what",
        choices=sorted([*LISTS, *PACKAGED_FILES]),
        metavar="WHAT",
        help="one of: " + ", ".join(sorted([*LISTS, *PACKAGED_FILES])),
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # a bad AVEMO_* value is refused before anything reads it (plugins load while parsing)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", settings.UnknownSettingWarning)
            settings.current()
    except UserError as e:
        print(f"avemo: error: {e}", file=sys.stderr)
        return 2
    for w in seen:  # a likely typo in a variable's name: one line, not a warning's traceback
        if issubclass(w.category, settings.UnknownSettingWarning):
            print(f"avemo: warning: {w.message}", file=sys.stderr)
    args = build_parser(next((x for x in argv if not x.startswith("-")), None)).parse_args(argv)
    setup_logging(args.verbosity)
    try:
        return COMMANDS[args.cmd](args)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `avemo inspect X | head`
        sys.stderr.close()
        return 0
    except UserError as e:  # the user's to fix: one message, no traceback
        print(f"avemo {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except Fault as e:  # a full disk, a damaged file: one message, exit code by kind
        print(f"avemo {args.cmd}: error: {e}", file=sys.stderr)
        return e.exit_code
    except (OSError, RuntimeError) as e:  # h5py reports some failed writes as RuntimeError
        if not is_disk_full(e):
            raise
        where = (e.filename if isinstance(e, OSError) else None) or str(e).splitlines()[0]
        print(
            f"avemo {args.cmd}: error: disk full writing {where}: no space left on device; free "
            "space or write elsewhere, then rerun the same command: finished work is kept",
            file=sys.stderr,
        )
        return DiskFullError.exit_code


if __name__ == "__main__":
    sys.exit(main())
