"""The ``avemo`` command: manifest, features, fuse-train, ablate, inspect, list."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from avemo.errors import UserError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
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
        with open(a.config) as f:
            overrides = yaml.safe_load(f) or {}
    for item in a.set or []:
        fs, _, kv = item.partition(":")
        k, _, v = kv.partition("=")
        overrides.setdefault(fs, {})[k] = yaml.safe_load(v)
    files = run_features(
        a.manifest, a.feature_set, a.output, device=a.device, overrides=overrides,
        batch_clips=a.batch_clips, on_mismatch="new" if a.new_on_mismatch else "error",
        progress=not a.quiet, shard_clips=a.shard_clips, compression=a.compression,
    )
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


@command("fuse-train")
def _fuse_train(a: argparse.Namespace) -> int:
    from avemo.fusion.train import train_from_config

    result = train_from_config(a.config, a.overrides)
    print(f"run folder: {result['run_dir']}")
    for k, v in sorted(result.get("metrics", {}).items()):
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    return 0


@command("ablate")
def _ablate(a: argparse.Namespace) -> int:
    from avemo.workflows.ablate import run_grid

    result = run_grid(a.grid, out_dir=a.output, dry_run=a.dry_run)
    print(f"results: {result['out_dir']}")
    return 0


@command("inspect")
def _inspect(a: argparse.Namespace) -> int:
    from avemo.data.store import describe

    for p in a.files:
        print(describe(p))
    return 0


LISTS = {
    "datasets": ("avemo.data.adapters", "DATASETS"),
    "feature-sets": ("avemo.extract.registry", "FEATURE_SETS"),
    "detectors": ("avemo.extract.registry", "DETECTORS"),
    "backbones": ("avemo.extract.registry", "BACKBONES"),
    "audio": ("avemo.extract.registry", "AUDIO"),
    "models": ("avemo.fusion.registry", "MODELS"),
    "temporal": ("avemo.fusion.registry", "TEMPORAL"),
    "fusion": ("avemo.fusion.registry", "FUSION"),
    "encoders": ("avemo.fusion.registry", "ENCODERS"),
    "losses": ("avemo.fusion.registry", "LOSSES"),
}


@command("list")
def _list(a: argparse.Namespace) -> int:
    mod_name, attr = LISTS[a.what]
    mod = importlib.import_module(mod_name)
    if hasattr(mod, "load_all"):
        mod.load_all()
    for name, doc in getattr(mod, attr).describe():
        print(f"{name:<28} {doc}")
    return 0


def _kv(items: Sequence[str] | None) -> list[tuple[str, str]]:
    return [tuple(i.split("=", 1)) for i in items or []]  # type: ignore[misc]


def build_parser() -> argparse.ArgumentParser:
    from avemo import __version__

    p = argparse.ArgumentParser(prog="avemo", description=__doc__)
    p.add_argument("--version", action="version", version=f"avemo {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    m = sub.add_parser("manifest", help="build a manifest from a dataset on disk")
    m.add_argument("dataset", help="adapter name (see `avemo list datasets`)")
    m.add_argument("root", help="dataset root folder (or CSV for the csv adapter)")
    m.add_argument("-o", "--output", required=True, help="manifest path (.csv or .parquet)")
    m.add_argument("--option", action="append", metavar="KEY=VALUE", help="adapter option")

    f = sub.add_parser("features", help="extract feature sets into OUT/<feature_set>.h5 (resumes)")
    f.add_argument("-m", "--manifest", required=True)
    f.add_argument("-s", "--feature-set", action="append", required=True,
                   help="feature set name (repeatable; see `avemo list feature-sets`)")
    f.add_argument("-o", "--output", required=True, help="output folder")
    f.add_argument("--device", default="cpu", help="cpu or cuda (falls back to cpu with a notice)")
    f.add_argument("-c", "--config", help="YAML mapping feature_set -> config overrides")
    f.add_argument("--set", action="append", metavar="FS:KEY=VALUE", help="one config override")
    f.add_argument("--batch-clips", type=int, default=8, help="clips per extraction batch")
    f.add_argument("--shard-clips", type=int, default=None,
                   help="clips per committed shard (default $AVEMO_SHARD_CLIPS or 32)")
    f.add_argument("--compression", choices=["gzip", "lzf"], default=None,
                   help="compress the final file (smaller, not memory-mappable)")
    f.add_argument("--new-on-mismatch", action="store_true",
                   help="when OUT holds the set made with another config, write <set>-<hash>.h5")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("fuse-train", help="train a fusion model on cached features")
    t.add_argument("-c", "--config", required=True, help="YAML run config")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")

    g = sub.add_parser("ablate", help="run an ablation grid from the cache (resumable)")
    g.add_argument("-g", "--grid", required=True, help="grid YAML")
    g.add_argument("-o", "--output", help="results folder (default: from the grid)")
    g.add_argument("--dry-run", action="store_true", help="list cells and missing features only")

    i = sub.add_parser("inspect", help="provenance, shapes and per-status counts of feature files")
    i.add_argument("files", nargs="+")

    ls = sub.add_parser("list", help="what is registered")
    ls.add_argument("what", choices=sorted(LISTS))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
