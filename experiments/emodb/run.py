"""EmoDB studies on avemo's public API: ``python experiments/emodb/run.py STUDY [options]``.

* ``models`` (``make emodb``): the packaged grid ``workflows/grids/emodb.yaml`` (deep models over
  Log-Mel / speech_embedding rows) vs eGeMAPS / ComParE functionals + SVM;
* ``descriptors``: ``grids/descriptors.yaml`` (the ``descriptors`` head over frame-level
  descriptor streams) vs ComParE + SVM;
* ``nested``: ``grids/nested.yaml``'s variant chosen per outer fold by inner leave-one-speaker-out
  CV on the training speakers (``--deploy``: the choice over all speakers);
* ``testbeds``: the packaged speech recipe (``grids/testbeds.yaml``) on balanced EmoDB and on
  beds whose speakers keep 1-2 emotions, vs the SVM plain / per-speaker normalised.

Each builds the manifest with the ``emodb`` adapter, extracts the feature sets it needs with
stage one, trains every grid cell with avemo's trainer on the manifest's speaker folds, scores
the one SVM baseline (``baseline.py``) on the SAME folds, and writes per_fold.csv / summary.csv /
README_snippet.md under ``-o`` and its table to ``benchmarks/results/<date>-emodb-<study>.md``
(``--results``; quick subsets write one only when asked). Deep runs train a fixed budget and are
scored at the last epoch: the test speakers never influence training.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: the repository root holds the experiments package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from avemo import settings  # noqa: E402
from experiments.emodb import baseline as bl  # noqa: E402
from experiments.emodb import study as st  # noqa: E402

DEFAULT_FEATURES = settings.current().cache / "emodb" / "features"  # AVEMO_CACHE
DESCRIPTOR_DEFAULT = ("desc_compare", "desc_smile_pitch", "desc_all", "desc_spectral")


class UsageError(ValueError):
    """A mistake on the command line: one line, exit 2."""


def _epochs(a: argparse.Namespace) -> list[str]:
    return [f"trainer.max_epochs={a.epochs}"] if a.epochs else []


def _results_path(a: argparse.Namespace, study: str, full: bool) -> Path | None:
    if a.results:
        return Path(a.results)
    return (
        st.REPO / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-emodb-{study}.md"
        if full
        else None
    )


def _finish(
    a: argparse.Namespace,
    out: Path,
    study: str,
    title: str,
    per_fold: pd.DataFrame,
    summary: pd.DataFrame,
    md: str,
    full: bool,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    per_fold.to_csv(out / "per_fold.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    command = "python experiments/emodb/run.py " + " ".join(shlex.quote(x) for x in a.argv)
    (out / "README_snippet.md").write_text(md + f"\nReproduce: `{command}`\n")
    path = _results_path(a, study, full)
    if path:
        st.write_results(path, title, md, command)
    return {"per_fold": per_fold, "summary": summary, "markdown": md, "results": path, "out": out}


def _svm(
    df: pd.DataFrame, cache: Path, which: Sequence[str], spk: Sequence[bool] = (False,)
) -> list[pd.DataFrame]:
    if not which:
        return []
    t = bl.run_baselines(df, cache, which, spk)
    return [t]


# ----------------------------------------------------------------------------- models (make emodb)


def study_models(a: argparse.Namespace) -> dict[str, Any]:
    """The packaged grid's deep models vs functionals + SVM on the same speaker folds."""
    spec = st.load_spec(st.packaged_grid("emodb"))
    out = Path(a.out or "runs/emodb")
    df = st.build_manifest(Path(a.root), a.folds, a.speakers, a.limit)
    manifest = st.save(df, out / "manifest.csv")
    classes = sorted(df["label"].unique())
    parts = _svm(df, out / "opensmile", a.baselines)
    if a.models:
        st.extract(manifest, st.grid_sets(spec, a.models), out / "features", a.device)
        runs = st.run_study_grid(
            spec,
            out / "grid",
            manifest,
            out / "features",
            int(df["fold"].max()) + 1,
            classes=classes,
            methods=a.models,
            seeds=range(a.seeds),
            overrides=_epochs(a),
            quiet=a.quiet,
        )
        parts.append(st.with_ensembles(runs))
    per_fold = pd.concat(parts, ignore_index=True)
    labels = {**bl.LABELS, **(spec.get("labels") or {}).get("method", {})}
    s = st.summarise(
        per_fold,
        labels,
        [b for b in ("compare_svm", "egemaps_svm") if b in set(per_fold["method"])][:1],
    )
    md = (
        "\n".join(
            [
                f"EmoDB ({df['subject'].nunique()} speakers, {len(df)} clips, {len(classes)} classes), "
                f"speaker-independent CV: {st.folds_desc(df)}. Mean ± std over folds (multi-seed rows: "
                "of the per-fold seed-averaged score).",
                "",
                *st.markdown_table(s, ["compare_svm", "egemaps_svm"]),
                "",
                f"Deep models: packaged grid workflows/grids/emodb.yaml on configs/emodb.yaml "
                f"({a.epochs or 20} epochs unless a row says 30, last epoch evaluated). SVM: standardised "
                "functionals, linear SVC (balanced), C in {1e-4..1} by leave-one-speaker-out UAR on the "
                "training speakers (experiments/emodb/baseline.py).",
            ]
        )
        + "\n"
    )
    return _finish(
        a,
        out,
        "models",
        "EmoDB speaker-independent check (audio only)",
        per_fold,
        s,
        md,
        not a.speakers and not a.limit,
    )


# ----------------------------------------------------------------------------- descriptors


def study_descriptors(a: argparse.Namespace) -> dict[str, Any]:
    spec = st.load_spec(st.GRIDS / "descriptors.yaml")
    out = Path(a.out or f"runs/emodb_descriptors_{'loso' if a.folds == 0 else a.folds}")
    df = st.build_manifest(Path(a.root), a.folds, a.speakers, a.limit)
    manifest = st.save(df, out / "manifest.csv")
    features = Path(a.features)
    st.extract(manifest, st.grid_sets(spec, a.models), features, a.device)
    parts = _svm(df, features.parent / "opensmile", a.baselines)
    runs = st.run_study_grid(
        spec,
        out / "grid",
        manifest,
        features,
        int(df["fold"].max()) + 1,
        classes=sorted(df["label"].unique()),
        methods=a.models,
        seeds=range(a.seeds),
        overrides=_epochs(a),
        quiet=a.quiet,
    )
    per_fold = pd.concat([*parts, st.with_ensembles(runs)], ignore_index=True)
    s = st.summarise(per_fold, {**bl.LABELS, **spec["labels"]["method"]}, ["compare_svm"])
    md = (
        "\n".join(
            [
                f"EmoDB, {st.folds_desc(df)}; UAR mean ± std over folds; gap = paired per-fold UAR "
                "difference (mean ± std over folds, folds won).",
                "",
                *st.markdown_table(s, ["compare_svm"]),
            ]
        )
        + "\n"
    )
    return _finish(
        a,
        out,
        f"descriptors-{'loso' if a.folds == 0 else a.folds}",
        "EmoDB: descriptor statistics -> linear vs ComParE + SVM",
        per_fold,
        s,
        md,
        not a.speakers and not a.limit,
    )


# ----------------------------------------------------------------------------- nested


def inner_choice(
    spec: dict[str, Any], df: pd.DataFrame, out: Path, features: Path, a: argparse.Namespace
) -> tuple[str, pd.DataFrame]:
    """The variant with the best mean UAR over leave-one-speaker-out folds of ``df`` (seed 0;
    ties to the earlier variant of the grid) and the per-variant inner scores. Only ``df``'s
    clips are in the inner manifest: no other speaker is read."""
    inner = st.loso(df)
    manifest = st.save(inner, out / "manifest.csv")
    runs = st.run_study_grid(
        spec,
        out / "grid",
        manifest,
        features,
        int(inner["fold"].max()) + 1,
        classes=sorted(df["label"].unique()),
        seeds=[0],
        overrides=_epochs(a),
        quiet=a.quiet,
    )
    order = list(spec["axes"]["method"])
    table = (
        runs.groupby("method")["uar"]
        .agg(inner_uar="mean", inner_folds="size")
        .reindex(order)
        .reset_index()
    )
    best = max(
        order, key=lambda m: (table.set_index("method").loc[m, "inner_uar"], -order.index(m))
    )
    return best, table


def study_nested(a: argparse.Namespace) -> dict[str, Any]:
    spec = st.load_spec(st.GRIDS / "nested.yaml")
    out = Path(a.out or f"runs/emodb_nested_{'loso' if a.folds == 0 else a.folds}")
    df = st.build_manifest(Path(a.root), a.folds, a.speakers, a.limit)
    manifest = st.save(df, out / "manifest.csv")
    features = Path(a.features)
    st.extract(manifest, st.grid_sets(spec, spec["axes"]["method"]), features, a.device)
    if a.deploy:
        best, table = inner_choice(spec, df, out / "deploy", features, a)
        table.to_csv(out / "deploy_inner.csv", index=False)
        print(table.to_string(index=False))
        print(f"deploy: {best}")
        return {"chosen": best, "inner": table}
    parts = _svm(
        df, features.parent / "opensmile", ["compare"] if a.baselines else [], (False, True)
    )
    chosen, inner_tables = {}, []
    for f in sorted(df["fold"].unique()):
        train = df[df["fold"] != f]  # the outer fold's training speakers only
        best, table = inner_choice(spec, train, out / "inner" / f"fold{f}", features, a)
        chosen[int(f)] = best
        inner_tables.append(table.assign(fold=int(f), chosen=table["method"] == best))
    runs = st.run_study_grid(
        spec,
        out / "outer",
        manifest,
        features,
        int(df["fold"].max()) + 1,
        classes=sorted(df["label"].unique()),
        seeds=range(a.seeds),
        overrides=_epochs(a),
        quiet=a.quiet,
    )
    nested = runs[[chosen[int(f)] == m for m, f in zip(runs["method"], runs["fold"], strict=True)]]
    nested = nested.assign(chosen=nested["method"], method="nested")
    per_fold = pd.concat(
        [*parts, st.with_ensembles(pd.concat([nested, runs], ignore_index=True), ["nested"])],
        ignore_index=True,
    )
    pd.concat(inner_tables).to_csv(out / "inner.csv", index=False)
    gaps = ["compare_svm", "compare_svm_spk"]
    s = st.summarise(per_fold, {**bl.LABELS, **spec["labels"]["method"]}, gaps)
    md = (
        "\n".join(
            [
                f"EmoDB, {st.folds_desc(df)}; UAR mean ± std over folds (seed-averaged per fold); gap = "
                "paired per-fold UAR difference in points (mean ± std over folds, folds won). Rows other "
                "than `nested` are the ablation (never used to choose).",
                "",
                *st.markdown_table(s, gaps),
                "",
                "Inner choice per outer fold: " + ", ".join(f"{f}: {m}" for f, m in chosen.items()),
            ]
        )
        + "\n"
    )
    res = _finish(
        a,
        out,
        f"nested-{'loso' if a.folds == 0 else a.folds}",
        "EmoDB: descriptor recipe chosen by nested CV",
        per_fold,
        s,
        md,
        not a.speakers and not a.limit,
    )
    return {**res, "chosen": chosen}


# ----------------------------------------------------------------------------- test beds


def unbalanced(df: pd.DataFrame, draw: int, max_tries: int = 10000) -> pd.DataFrame:
    """The derived manifest of draw ``draw``: each speaker's clips of 1 or 2 of its emotions
    (1 or 2 with probability 1/2, emotions uniform, ``numpy`` generator seeded with ``draw``),
    redrawn until every emotion is kept by at least one speaker; rows otherwise unchanged."""
    rng = np.random.default_rng(draw)
    classes = set(df["label"])
    speakers = sorted(df["subject"].astype(str).unique())
    own = {s: sorted(df.loc[df["subject"].astype(str) == s, "label"].unique()) for s in speakers}
    for _ in range(max_tries):
        keep = {
            s: set(
                rng.choice(own[s], size=min(int(rng.integers(1, 3)), len(own[s])), replace=False)
            )
            for s in speakers
        }
        if set().union(*keep.values()) == classes:
            rows = [lab in keep[str(s)] for s, lab in zip(df["subject"], df["label"], strict=True)]
            return df[rows].reset_index(drop=True)
    raise RuntimeError(f"no draw covers every emotion after {max_tries} tries")


def score_bed(
    bed: str,
    df: pd.DataFrame,
    protocol: str,
    out: Path,
    features: Path,
    spec: dict[str, Any],
    a: argparse.Namespace,
    functionals: pd.DataFrame | None,
) -> pd.DataFrame:
    """Every method on one bed and protocol (``4folds``: the manifest's folds; ``loso``): the
    recipe grid's runs, their seed ensemble, the auto choice each run recorded, and both SVM rows."""
    d = st.loso(df) if protocol == "loso" else df
    manifest = st.save(d, out / "manifest.csv")
    runs = st.run_study_grid(
        spec,
        out / "grid",
        manifest,
        features,
        int(d["fold"].max()) + 1,
        classes=sorted(d["label"].unique()),
        methods=a.methods,
        seeds=range(a.seeds),
        overrides=_epochs(a),
        quiet=a.quiet,
    )
    modes, inner = [], []
    for r in runs["run_dir"]:
        rec = (
            json.loads((Path(r) / "speaker_norm.json").read_text())
            if (Path(r) / "speaker_norm.json").exists()
            else {}
        )
        modes.append(rec.get("mode", "off"))
        inner.append(" ".join(f"{t['mode']}={t['inner_uar']:.3f}" for t in rec.get("inner") or []))
    runs = runs.assign(mode=modes, inner=inner)
    parts = [st.with_ensembles(runs, ["recipe"])]
    if functionals is not None:
        x = functionals.loc[d["clip_id"]].to_numpy(np.float64)
        parts += [pd.DataFrame(bl.svm_rows(d, x, "compare", sn)) for sn in (False, True)]
    rows = pd.concat(parts, ignore_index=True)
    y, fold = d["label"].astype(str).to_numpy(), d["fold"].to_numpy()
    unseen = {int(f): int((~np.isin(y[fold == f], y[fold != f])).sum()) for f in set(fold)}
    return rows.assign(bed=bed, protocol=protocol, unseen_test_clips=rows["fold"].map(unseen))


def study_testbeds(a: argparse.Namespace) -> dict[str, Any]:
    spec = st.load_spec(st.GRIDS / "testbeds.yaml")
    out = Path(a.out or "runs/emodb_testbeds")
    df = st.build_manifest(Path(a.root), 4, a.speakers, a.limit)
    features = Path(a.features)
    st.extract(st.save(df, out / "manifest.csv"), st.grid_sets(spec, a.methods), features, a.device)
    func = (
        bl.opensmile_functionals(df, "compare", features.parent / "opensmile" / "compare.parquet")
        if a.baselines
        else None
    )
    beds = ([("balanced", df)] if not a.no_balanced else []) + [
        (f"unbalanced-d{k}", unbalanced(df, k)) for k in range(a.first_draw, a.first_draw + a.draws)
    ]
    parts = []
    for bed, d in beds:
        for proto in a.protocols:
            parts.append(score_bed(bed, d, proto, out / bed / proto, features, spec, a, func))
    per_fold = pd.concat(parts, ignore_index=True)
    lines = [
        "Test beds: `balanced` = all clips; `unbalanced-dK` = each speaker keeps 1-2 of its emotions "
        "(draw K). UAR mean ± std over folds (unbalanced: folds of all draws pooled); gap = paired "
        "per-fold UAR difference in points (folds won).",
        "",
    ]
    summaries = []
    gaps = ["compare_svm", "compare_svm_spk"]
    labels = {**bl.LABELS, **spec["labels"]["method"]}
    for (grp, proto), g in per_fold.assign(group=per_fold["bed"].str.split("-").str[0]).groupby(
        ["group", "protocol"], sort=False
    ):
        s = st.summarise(g.assign(fold=g["bed"] + ":" + g["fold"].astype(str)), labels, gaps)
        summaries.append(s.assign(bed=f"{grp} ({g['bed'].nunique()})", protocol=proto))
    s = pd.concat(summaries, ignore_index=True)
    lines += st.markdown_table(s, gaps, first=["bed", "protocol"])
    choices = per_fold[per_fold["method"].isin(["recipe", "recipe_1se"]) & (per_fold["seed"] == 0)]
    lines += [
        "",
        "Auto choices (seed 0; per bed, protocol, fold): "
        + "; ".join(
            f"{r.bed} {r.protocol} {r.fold} {r.method}={r.mode}" for r in choices.itertuples()
        ),
    ]
    return _finish(
        a,
        out,
        "testbeds",
        "EmoDB test beds for the speech recipe",
        per_fold,
        s,
        "\n".join(lines) + "\n",
        not a.speakers and not a.limit,
    )


# ----------------------------------------------------------------------------- CLI


STUDIES = {
    "models": study_models,
    "descriptors": study_descriptors,
    "nested": study_nested,
    "testbeds": study_testbeds,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python experiments/emodb/run.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="study", required=True, metavar="STUDY")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root", default=str(st.DEFAULT_ROOT), help="EmoDB folder (wav/ + labels.csv)"
    )
    common.add_argument("-o", "--out", help="study folder (default: runs/emodb[_<study>...])")
    common.add_argument(
        "--results", help="results Markdown (default: benchmarks/results/<date>-emodb-<study>.md)"
    )
    common.add_argument("--speakers", nargs="*", help="subset of speaker ids (quick checks)")
    common.add_argument("--limit", type=int, help="clips per speaker (quick checks)")
    common.add_argument(
        "--epochs", type=int, help="trainer.max_epochs for every run (quick checks)"
    )
    common.add_argument("--seeds", type=int, default=3, help="training seeds per fold (0..N-1)")
    common.add_argument("--device", default="cpu", help="feature extraction device")
    common.add_argument("--quiet", action="store_true", help="no per-cell progress")
    models = list(st.load_spec(st.packaged_grid("emodb"))["axes"]["method"])
    m = sub.add_parser(
        "models", parents=[common], help="make emodb: the packaged grid vs functionals + SVM"
    )
    m.add_argument("--folds", type=int, default=4, help="speaker folds (0 = leave one speaker out)")
    m.add_argument(
        "--models",
        nargs="*",
        default=models,
        choices=models,
        metavar="MODEL",
        help=", ".join(models),
    )
    m.add_argument(
        "--baselines",
        nargs="*",
        default=None,
        choices=list(bl.BASELINES),
        help="functionals + SVM (default: both when opensmile is installed)",
    )
    m.set_defaults(seeds=1)
    desc = list(st.load_spec(st.GRIDS / "descriptors.yaml")["axes"]["method"])
    d = sub.add_parser(
        "descriptors", parents=[common], help="descriptor statistics -> linear vs ComParE + SVM"
    )
    d.add_argument("--folds", type=int, default=4, help="speaker folds (0 = leave one speaker out)")
    d.add_argument(
        "--features", default=str(DEFAULT_FEATURES), help="feature cache folder (extracted once)"
    )
    d.add_argument(
        "--models",
        nargs="*",
        default=list(DESCRIPTOR_DEFAULT),
        choices=desc,
        metavar="MODEL",
        help=", ".join(desc),
    )
    d.add_argument(
        "--baselines", nargs="*", default=["compare", "egemaps"], choices=list(bl.BASELINES)
    )
    n = sub.add_parser(
        "nested", parents=[common], help="the recipe chosen by nested CV on training speakers"
    )
    n.add_argument("--folds", type=int, default=4, help="speaker folds (0 = leave one speaker out)")
    n.add_argument(
        "--features", default=str(DEFAULT_FEATURES), help="feature cache folder (extracted once)"
    )
    n.add_argument(
        "--no-baselines", dest="baselines", action="store_false", help="skip ComParE + SVM"
    )
    n.add_argument("--deploy", action="store_true", help="only the inner choice over all speakers")
    t = sub.add_parser("testbeds", parents=[common], help="balanced and unbalanced-speaker beds")
    t.add_argument(
        "--features", default=str(DEFAULT_FEATURES), help="feature cache folder (extracted once)"
    )
    t.add_argument(
        "--draws", type=int, default=5, help="random draws of the unbalanced-speaker bed"
    )
    t.add_argument("--first-draw", type=int, default=0, help="seed of the first draw (K..K+N-1)")
    t.add_argument("--protocols", nargs="*", default=["4folds", "loso"], choices=["4folds", "loso"])
    t.add_argument("--no-balanced", action="store_true", help="only the unbalanced beds")
    tb = list(st.load_spec(st.GRIDS / "testbeds.yaml")["axes"]["method"])
    t.add_argument(
        "--methods", nargs="*", default=tb, choices=tb, metavar="METHOD", help=", ".join(tb)
    )
    t.add_argument(
        "--no-baselines", dest="baselines", action="store_false", help="skip the SVM rows"
    )
    return p


def _check(a: argparse.Namespace) -> None:
    import importlib.util

    if not Path(a.root).exists():
        raise UsageError(f"EmoDB not found at {a.root} (see ../shared/data/README.md; --root PATH)")
    if a.seeds < 1 or getattr(a, "draws", 0) < 0:
        raise UsageError("--seeds must be >= 1 and --draws >= 0")
    have = importlib.util.find_spec("opensmile") is not None
    if a.study == "models" and a.baselines is None:
        a.baselines = list(bl.BASELINES) if have else []
        if not have:
            print(
                "emodb: functionals + SVM skipped (pip install -e '.[smile]'; research-only licence)",
                file=sys.stderr,
            )
    needs = a.study != "models" or bool(a.baselines)
    if needs and not have:
        raise UsageError(
            f"the {a.study} study needs opensmile (compare_lld / the SVM baseline): "
            "pip install -e '.[smile]' (research-only licence)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    a.argv = argv
    try:
        _check(a)
    except UsageError as e:
        print(f"run.py {a.study}: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    res = STUDIES[a.study](a)
    if "markdown" in res:
        print(res["markdown"])
    print(
        f"{a.study}: {time.perf_counter() - t0:.0f}s; results: {res.get('results') or '-'}",
        file=sys.stderr,
    )
    return 0


def run_study(argv: Sequence[str]) -> dict[str, Any]:
    """The study's result dict (tests and notebooks): same options as the command line."""
    a = build_parser().parse_args(list(argv))
    a.argv = list(argv)
    _check(a)
    return STUDIES[a.study](a)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
