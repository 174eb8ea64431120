"""``avemo predict RUN_DIR INPUT...``: a trained run applied to new media files.

The one place that calls both stages for prediction: the run folder says which feature sets
(full extractor configs, weight sha256s) the model was trained on (``avemo.fusion.predict``);
this module checks that this machine makes exactly those features -- a config key or a weight
file that differs is refused, naming it, before anything is written -- extracts them with the
stage-one runner into ``OUT/features/<modality>/`` (resumable; a cached file that already
holds every clip with the run's exact provenance is used as is, so a rerun builds and extracts
nothing), then runs the checkpoint and writes ``OUT/predictions.{csv,parquet}`` and,
with ``--plot``, ``OUT/plots/<clip>.png``.

INPUT is media files, folders (searched recursively for media) or manifests (.csv /
.parquet with clip_id and video and/or audio; a ``label`` column is carried into the table).
A run trained with per-speaker normalisation (``data.speaker_norm``) normalises the new clips
per speaker: a manifest's ``subject`` column says whose clip is whose; media files given
directly are one speaker, ``--speaker NAME`` (one speaker per call); a speaker with few clips
gets a warning (its statistics are noisy).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from avemo.data.manifest import save_manifest
from avemo.errors import UsageError, UserError
from avemo.extract.registry import FEATURE_SETS, load_for
from avemo.extract.weights import WEIGHTS
from avemo.fusion.plots import plot_attention
from avemo.workflows.entry import module_main

if TYPE_CHECKING:  # annotations only: the command loads torch when it runs, not at import
    from avemo.fusion.tasks import Task

VIDEO_EXT = (".mp4", ".mov", ".avi", ".mkv", ".flv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
AUDIO_EXT = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".aac", ".opus")
MANIFEST_EXT = (".csv", ".parquet")


class FeatureMismatchError(UserError, ValueError):
    """This machine would extract other features than the run was trained on."""


# ----------------------------------------------------------------------------- inputs


def _media_row(path: Path, used: dict[str, int]) -> dict[str, Any]:
    stem = path.stem
    n = used.get(stem, 0)
    used[stem] = n + 1
    cid = stem if n == 0 else f"{stem}-{n + 1}"
    video = str(path) if path.suffix.lower() in VIDEO_EXT else None
    return {"clip_id": cid, "video": video, "audio": str(path)}


def read_manifest(path: Path) -> pd.DataFrame:
    """A prediction manifest: clip_id and video and/or audio (relative paths: from its folder);
    no split / subject / label needed (``label`` is carried into the table, ``subject`` says
    the speaker for per-speaker normalisation)."""
    try:
        df = (
            pd.read_parquet(path)
            if path.suffix.lower() == ".parquet"
            else pd.read_csv(path, dtype=str)
        )
    except Exception as e:  # noqa: BLE001 - any unreadable table is the user's to fix
        raise UsageError(f"manifest {path} cannot be read: {e}") from None
    media = [c for c in ("video", "audio") if c in df.columns]
    if "clip_id" not in df.columns or not media:
        raise UsageError(
            f"manifest {path} needs a clip_id column and a video and/or audio column; "
            f"it has {list(df.columns)}"
        )
    df = df[[c for c in ("clip_id", *media, "label", "subject") if c in df.columns]].copy()
    for c in media:
        df[c] = [
            None if pd.isna(v) or not str(v).strip() else str((path.parent / str(v)).resolve())
            for v in df[c]
        ]
    gone = [v for c in media for v in df[c] if v is not None and not Path(v).is_file()]
    if gone:
        raise UsageError(f"manifest {path}: {len(gone)} media file(s) do not exist, e.g. {gone[0]}")
    return df


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], speaker: str | None = None
) -> pd.DataFrame:
    """One manifest (clip_id, video, audio[, label][, subject]) from files, folders and manifests;
    ``speaker``: the subject of every clip no manifest names one for."""
    if not inputs:
        raise UsageError("no INPUT given: name media files, a folder of them, or a manifest")
    tables: list[pd.DataFrame] = []  # in the order the inputs were given
    used: dict[str, int] = {}
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(
                q
                for q in p.rglob("*")
                if q.is_file() and q.suffix.lower() in (*VIDEO_EXT, *AUDIO_EXT)
            )
            if not found:
                raise UsageError(
                    f"INPUT folder {p} holds no media files ({', '.join(VIDEO_EXT + AUDIO_EXT)})"
                )
            tables.append(pd.DataFrame([_media_row(q.resolve(), used) for q in found]))
        elif p.is_file() and p.suffix.lower() in MANIFEST_EXT:
            tables.append(read_manifest(p))
        elif p.is_file() and p.suffix.lower() in (*VIDEO_EXT, *AUDIO_EXT):
            tables.append(pd.DataFrame([_media_row(p.resolve(), used)]))
        elif p.exists():
            raise UsageError(
                f"INPUT {p} is not a media file ({', '.join(VIDEO_EXT + AUDIO_EXT)}), "
                "a folder or a manifest (.csv / .parquet)"
            )
        else:
            raise UsageError(f"INPUT {p} does not exist")
    df = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if df.empty:
        raise UsageError("no clips found in " + ", ".join(map(str, inputs)))
    df["clip_id"] = df["clip_id"].astype(str)
    if speaker is not None:
        if not str(speaker).strip():
            raise UsageError("--speaker needs a name (the speaker of the media files given)")
        have = (
            df["subject"]
            if "subject" in df.columns
            else pd.Series([None] * len(df), index=df.index)
        )
        df["subject"] = [str(speaker) if pd.isna(v) or not str(v).strip() else str(v) for v in have]
    dup = df["clip_id"][df["clip_id"].duplicated()].tolist()
    if dup:
        raise UsageError(
            f"clip id {dup[0]!r} comes twice from the inputs; give each clip one id "
            "(rename a file, or use one manifest)"
        )
    return df.reset_index(drop=True)


# ----------------------------------------------------------------------------- features


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 24 else s[:21] + "...'"


def check_feature_sets(requests: Mapping[str, Mapping[str, Any]], device: str) -> dict[str, Any]:
    """Build each requested stage-one feature set with the run's recorded config and compare
    what it would record; refuse (one message listing every difference) when they differ."""
    from avemo.data.store import _flatten

    load_for(sorted({str(r["feature_set"]) for r in requests.values()}))
    sets: dict[str, Any] = {}
    problems: list[str] = []
    for m, req in requests.items():
        name = str(req["feature_set"])
        where = f"{m} ({name})"
        try:
            fs = FEATURE_SETS.build(name, dict(req.get("config") or {}), device)
            have = fs.provenance()
        except UserError as e:
            problems.append(f"{where}: the run's recorded config cannot be used here: {e}")
            continue
        want_cfg, have_cfg = _flatten(req.get("config") or {}), _flatten(have["config"])
        for k in sorted(set(want_cfg) | set(have_cfg)):
            a, b = want_cfg.get(k, "<absent>"), have_cfg.get(k, "<absent>")
            if a != b:
                problems.append(
                    f"{where}: config key {k}: the run used {_short(a)}, this avemo "
                    f"makes {_short(b)}"
                )
        want_w, have_w = dict(req.get("weights") or {}), dict(have.get("weights") or {})
        for w in sorted(set(want_w) | set(have_w)):
            a, b = want_w.get(w), have_w.get(w)
            if a != b:
                env = WEIGHTS.get(w).env_var if w in WEIGHTS else None
                fix = f" (point {env} at the run's file)" if env else ""
                problems.append(
                    f"{where}: weight file {w}: sha256 {str(b)[:12] if b else 'absent'} here, "
                    f"the run's features were made with {str(a)[:12] if a else 'no such file'}"
                    f"{fix}"
                )
        sets[m] = fs
    if problems:
        raise FeatureMismatchError(
            "this machine cannot extract exactly the features the run was trained on: "
            + "; ".join(problems)
            + ". Predictions from other features would be meaningless: "
            "install the same weights / avemo version, or retrain on features made here"
        )
    return sets


def feature_path(out: Path, modality: str, request: Mapping[str, Any]) -> Path:
    return out / "features" / modality / f"{request['feature_set']}.h5"


def cached(path: Path, request: Mapping[str, Any], clip_ids: Sequence[str]) -> bool:
    """Whether ``path`` already holds every clip, made exactly as the run's features were
    (same set, config and weight checksums): then nothing needs building or extracting."""
    from avemo.data.store import FeatureFile, diff_provenance

    if not path.is_file():
        return False
    with FeatureFile(path) as ff:
        return not diff_provenance(ff.provenance, request) and all(c in ff for c in clip_ids)


def extract(
    manifest: pd.DataFrame,
    requests: Mapping[str, Mapping[str, Any]],
    out: Path,
    device: str,
    progress: bool = True,
    built: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Stage one for every modality into ``out/features/<modality>/<set>.h5`` (resumes);
    ``built``: per modality, the set ``check_feature_sets`` already built (not built again)."""
    from avemo.extract.runner import run_features

    files: dict[str, Path] = {}
    for m, req in requests.items():
        name = str(req["feature_set"])
        got = run_features(
            manifest[[c for c in ("clip_id", "video", "audio") if c in manifest]],
            [name],
            feature_path(out, m, req).parent,
            device=device,
            overrides={name: dict(req.get("config") or {})},
            progress=progress,
            built={name: built[m]} if built and m in built else None,
        )
        files[m] = Path(got[name])
    return files


# ----------------------------------------------------------------------------- whole command


def predict_inputs(
    run_dir: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    checkpoint: str | None = None,
    device: str | None = None,
    fmt: str = "csv",
    plot: bool = False,
    progress: bool = True,
    batch_size: int | None = None,
    speaker: str | None = None,
) -> dict[str, Any]:
    """Everything ``avemo predict`` does: writes ``OUT/predictions.*`` (and plots), returns
    ``{"table", "path", "plots", "out", "run"}``."""
    from avemo.fusion.predict import plot_clip
    from avemo.fusion.run import Run, resolve_device

    if fmt not in ("csv", "parquet"):
        raise UsageError(f"--format must be csv or parquet, got {fmt!r}")
    manifest = collect_inputs(inputs, speaker)
    dev = resolve_device(device)
    run = Run.from_dir(run_dir, checkpoint, dev)
    requests = run.feature_requests()
    out_dir = (
        Path(out) if out is not None else Path.cwd() / "predict" / Path(run_dir).resolve().name
    )
    ids = manifest["clip_id"].tolist()
    files = {m: feature_path(out_dir, m, r) for m, r in requests.items()}
    todo = {m: r for m, r in requests.items() if not cached(files[m], r, ids)}
    built = check_feature_sets(todo, dev.type)  # refuse before anything is written
    files.update(extract(manifest, todo, out_dir, dev.type, progress, built))
    from avemo.fusion.predict import predict_files

    subjects = (
        dict(zip(manifest["clip_id"], manifest["subject"], strict=True))
        if "subject" in manifest.columns
        else None
    )
    table, extra = predict_files(run, files, ids, batch_size, progress, subjects, attention=plot)
    if extra.get("speakers"):  # the speaker each clip was normalised with
        table.insert(1, "speaker", table["clip_id"].map(extra["speakers"]))
    if "label" in manifest.columns:
        table.insert(
            1,
            "label",
            table["clip_id"].map(dict(zip(manifest["clip_id"], manifest["label"], strict=True))),
        )
    path = save_manifest(table, out_dir / f"predictions.{fmt}")
    plots = (
        [
            plot_clip(run, table, c, out_dir / "plots" / f"{c}.png")
            for c in dict.fromkeys(table["clip_id"])
        ]
        if plot
        else []
    )
    if plot:  # models with temporal attention: where in each clip it looked, in seconds
        for c, a in (extra.get("attention") or {}).items():
            plots.append(
                plot_attention(
                    a["attention"],
                    a["timing"],
                    out_dir / "plots" / f"{c}_attention.png",
                    a["strides"],
                    f"{c}: temporal attention",
                )
            )
    return {"table": table, "path": path, "plots": plots, "out": out_dir, "run": run}


def summary(table: pd.DataFrame, task: Task, max_rows: int = 40) -> str:
    """What the command prints: one line per clip, the run's task's columns
    (``Task.clip_summary``: the predicted class and its probability, or each target's mean
    over the clip's frames), then what was missing and whether the row is flagged."""
    show = task.clip_summary(table)
    cols = list(show.columns)
    show = show.assign(
        missing=table.groupby("clip_id", sort=False)["missing"]
        .first()
        .reindex(show["clip_id"])
        .to_numpy()
    )
    if "flagged" in table:
        show = show.assign(
            flagged=table.groupby("clip_id", sort=False)["flagged"]
            .first()
            .reindex(show["clip_id"])
            .to_numpy()
        )
    return (
        show[[*cols, "missing", *(["flagged"] if "flagged" in show else [])]]
        .head(max_rows)
        .to_string(index=False, float_format=lambda v: f"{v:.3f}")
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``avemo predict`` (also ``python -m avemo.workflows.predict``)."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `avemo fuse-train`")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="media files, folders of them, or manifests (.csv / .parquet)",
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        help="output folder (default ./predict/<run folder name>); features are cached "
        "under OUT/features so a rerun extracts nothing",
    )
    p.add_argument(
        "--checkpoint",
        choices=["swa", "best", "last"],
        default=None,
        help="which of the run's checkpoints to apply (default: the weights its final "
        "metrics came from -- swa, else best, else last; one asked for and missing is "
        "refused, naming the ones it has)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: the GPU when there is one; cuda without one: the CPU, with a notice",
    )
    p.add_argument(
        "--format",
        dest="fmt",
        choices=["csv", "parquet"],
        default="csv",
        help="OUT/predictions.csv (default) or .parquet",
    )
    p.add_argument(
        "--plot",
        action="store_true",
        help="one PNG per clip under OUT/plots, and for models with temporal attention "
        "CLIP_attention.png: each modality's weights over the clip in seconds",
    )
    p.add_argument("--batch-size", type=int, default=None, help="sequences per model batch")
    p.add_argument(
        "--speaker",
        default=None,
        metavar="NAME",
        help="runs trained with per-speaker normalisation: the speaker of the media files "
        "given (clips a manifest's subject column names keep theirs); without it they "
        "are normalised together as one speaker",
    )


def run(a: argparse.Namespace) -> int:
    res = predict_inputs(
        a.run_dir,
        a.inputs,
        a.out,
        a.checkpoint,
        a.device,
        a.fmt,
        a.plot,
        progress=getattr(a, "verbosity", 0) >= 0,
        batch_size=a.batch_size,
        speaker=a.speaker,
    )
    print(summary(res["table"], res["run"].task))
    print(f"predictions: {res['path']}")
    if res["plots"]:
        print(f"plots: {len(res['plots'])} PNG in {res['out'] / 'plots'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return module_main("predict", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
