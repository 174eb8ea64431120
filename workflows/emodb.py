"""EmoDB real labelled check: audio-only, speaker-independent cross-validation.

``python -m avemo.workflows.emodb`` builds the EmoDB manifest (speaker folds), extracts the
cached ``logmel`` and ``speech_embedding`` feature sets with stage one (the only place in
workflows that calls the extraction runner), cross-validates the stage-two model variants of
the packaged grid ``grids/emodb.yaml`` (training protocol: ``configs/emodb.yaml``) on the
manifest's speaker folds, and scores the classical baseline of ``workflows.emodb_baseline``
on the SAME folds: eGeMAPS v02 and ComParE-2016 functionals (opensmile) + a linear SVM on
standardised features, C chosen by inner leave-one-speaker-out CV on the training speakers.
No speaker is ever in both train and test (checked on every fold, from the runs' own split
files). Protocol of the deep models: fixed epoch budget, the last epoch is evaluated (no
checkpoint selection, so the test fold never influences training). ``--seeds N`` trains the
``--seed-models`` with seeds 0..N-1 per fold: rows then report the per-fold seed-averaged score,
plus a clearly labelled seed-ENSEMBLE row (class probabilities averaged per test clip).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avemo.errors import UsageError
from avemo.workflows.emodb_baseline import (  # noqa: F401 - the baseline, re-exported
    BASELINES,
    C_GRID,
    _scores,
    opensmile_functionals,
    run_baselines,
    svm_fold,
)
from avemo.workflows.emodb_baseline import LABELS as BASELINE_LABELS

#: EmoDB folder (wav/ + labels.csv): ``AVEMO_EMODB``, else ``../shared/data/emodb-8spk`` from the
#: working directory (the repository root under ``make emodb``).
DEFAULT_ROOT = Path(os.environ.get("AVEMO_EMODB", "../shared/data/emodb-8spk"))
FEATURE_SETS = ("logmel", "speech_embedding")


def _packaged(kind: str, name: str) -> Path:
    """A packaged config / grid (found through the package, wherever it is installed)."""
    import avemo.workflows

    return Path(avemo.workflows.__file__).resolve().parent / kind / f"{name}.yaml"


GRID_FILE = _packaged("grids", "emodb")
CONFIG_FILE = _packaged("configs", "emodb")


def _grid_spec() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(GRID_FILE.read_text())


#: The model variants: the ``method`` axis of ``grids/emodb.yaml`` (name -> override bundle).
MODELS: dict[str, dict[str, Any]] = _grid_spec()["axes"]["method"]


def build_manifest(root: Path, folds: int, speakers: Sequence[str] | None = None,
                   limit: int | None = None) -> pd.DataFrame:
    """EmoDB manifest via the data adapter (``folds`` speaker folds; 0 = leave one speaker out);
    ``speakers`` / ``limit`` (clips per speaker) make quick subsets."""
    from avemo.data.adapters import build_manifest as adapter_manifest

    df = adapter_manifest("emodb", root, folds=folds)
    if limit:  # each speaker's clips taken round-robin over emotions: a subset keeps every class
        df = df.sort_values("clip_id")
        df = df.assign(_turn=df.groupby(["subject", "label"]).cumcount())
        df = (df.sort_values(["_turn", "label", "clip_id"]).groupby("subject", sort=True).head(int(limit))
              .sort_values("clip_id").drop(columns="_turn").reset_index(drop=True))
    if speakers:
        keep = {str(s).zfill(2) for s in speakers}
        df = df[df["subject"].astype(str).isin(keep)].reset_index(drop=True)
        subs = sorted(df["subject"].unique())
        k = folds or len(subs)
        df["fold"] = [sorted(subs).index(s) * k // len(subs) for s in df["subject"]]
    df["split"] = "train"
    return df


def base_config(manifest: Path, epochs: int, classes: Sequence[str]) -> dict[str, Any]:
    """``configs/emodb.yaml`` (the shared training protocol) on this manifest and budget."""
    import yaml

    from avemo.fusion.config import resolve_paths

    cfg = resolve_paths(yaml.safe_load(CONFIG_FILE.read_text()), CONFIG_FILE.parent)  # its own rule
    cfg["data"].update({"manifest": str(Path(manifest).resolve()), "classes": list(classes)})
    cfg["trainer"]["max_epochs"] = int(epochs)
    return cfg


def _model_bundles(features: Path) -> dict[str, dict[str, Any]]:
    """The grid's bundles with their feature files taken from ``features`` (by file name)."""
    out = {}
    for name, spec in MODELS.items():
        b = dict(spec)
        b["data.features"] = {m: str(Path(features).resolve() / Path(p).name)
                              for m, p in spec["data.features"].items()}
        out[name] = b
    return out


# ----------------------------------------------------------------------------- deep models


def _grid_rows(df: pd.DataFrame, manifest: Path, features: Path, out_dir: Path, epochs: int,
               which: Sequence[str], seeds: Sequence[int] | None) -> list[dict[str, Any]]:
    """One ablation grid (model [x seed] x fold) -> per-run rows, speaker disjointness checked."""
    from avemo.workflows.ablate import run_grid

    k = int(df["fold"].max()) + 1
    bundles = {m: b for m, b in _model_bundles(features).items() if m in which}
    classes = sorted(df["label"].unique())
    axes: dict[str, Any] = {"method": bundles}
    if seeds is not None:  # no seed axis for seed 0 alone: keeps the cell ids (and cache) of 1-seed runs
        axes["seed"] = list(seeds)
    spec = _grid_spec()
    grid = {"name": spec["name"], "base": base_config(manifest, epochs, classes), "axes": axes,
            "cv": {**spec["cv"], "k": k}, "report": spec.get("report") or {},
            "labels": spec.get("labels") or {}}
    return run_rows(run_grid(grid, out_dir=out_dir, quiet=False)["table"], seeded=seeds is not None)


def run_rows(table: pd.DataFrame, seeded: bool = True) -> list[dict[str, Any]]:
    """One row per run of a finished EmoDB grid (test accuracy / UAR, its speakers); a cell that
    did not finish, or whose train and test speakers overlap, stops the experiment."""
    rows = []
    for _, r in table.iterrows():
        if r.get("status") != "done":
            raise RuntimeError(f"EmoDB cell {r['cell_id']} did not finish: {r.get('error')}")
        sp = json.loads((Path(r["run_dir"]) / "splits.json").read_text())
        tr, te = set(sp["subjects"]["train"]), set(sp["subjects"]["test"])
        if tr & te:
            raise RuntimeError(f"{r['cell_id']}: speakers {sorted(tr & te)} in train and test")
        rows.append({"method": r["method"], "fold": int(r["fold"]), "seed": int(r["seed"]) if seeded else 0,
                     "accuracy": r["test/accuracy"], "uar": r["test/uar"], "test_speakers": " ".join(sorted(te)),
                     "train_speakers": " ".join(sorted(tr)), "run_dir": str(r["run_dir"])})
    return rows


def seed_ensemble(runs: pd.DataFrame) -> dict[str, Any]:
    """Score the average of the seeds' test-clip class probabilities (one fold, one method): the
    runs' own ``predictions.csv``; every seed must have predicted the same clips."""
    probs, labels = [], None
    for d in runs["run_dir"]:
        pr = pd.read_csv(Path(d) / "predictions.csv")
        pr = pr[pr["partition"] == "test"].set_index("clip_id").sort_index()
        if labels is not None and not pr.index.equals(labels.index):
            raise RuntimeError(f"{d}: test clips differ between seeds")
        labels = pr["label"].astype(str)
        probs.append(pr[[c for c in pr.columns if c.startswith("p_")]])
    mean = sum(p.to_numpy(np.float64) for p in probs) / len(probs)
    classes = np.array([c.removeprefix("p_") for c in probs[0].columns])
    pred = classes[mean.argmax(1)]
    return {"probabilities": pd.DataFrame(mean, index=labels.index, columns=probs[0].columns),
            **_scores(labels.to_numpy(), pred)}


def run_models(df: pd.DataFrame, manifest: Path, features: Path, out: Path, epochs: int,
               which: Sequence[str], seeds: int = 1, seed_models: Sequence[str] | None = None) -> pd.DataFrame:
    """The stage-two models as one grid: model x fold (the manifest's speaker folds), seed 0.
    With ``seeds`` > 1 the ``seed_models`` (default: all of ``which``) are also trained with
    seeds 1..seeds-1 (a second grid, ``out/grid_seeds``), and a ``<method>_ens<seeds>`` row per
    fold scores the seed ensemble (class probabilities averaged per clip)."""
    rows = _grid_rows(df, manifest, features, out / "grid", epochs, which, None)
    multi = [m for m in (which if seed_models is None else seed_models) if m in which]
    if seeds > 1 and multi:
        rows += _grid_rows(df, manifest, features, out / "grid_seeds", epochs, multi, range(1, seeds))
    per_run = pd.DataFrame(rows)
    ens = []
    for (m, f), g in per_run[per_run["method"].isin(multi)].groupby(["method", "fold"], sort=True):
        if seeds > 1 and len(g) == seeds:
            sc = seed_ensemble(g)
            ens.append({"method": f"{m}_ens{seeds}", "fold": int(f), "seed": -1, "accuracy": sc["accuracy"],
                        "uar": sc["uar"], "test_speakers": g["test_speakers"].iloc[0],
                        "train_speakers": g["train_speakers"].iloc[0], "run_dir": ""})
    return pd.concat([per_run, pd.DataFrame(ens)], ignore_index=True) if ens else per_run


# ----------------------------------------------------------------------------- summary


LABELS = {**_grid_spec()["labels"]["method"], **BASELINE_LABELS}


def _ens_base(method: str) -> tuple[str, int] | None:
    """``<method>_ens<n>`` -> (method, n); None for other rows."""
    base, sep, n = method.rpartition("_ens")
    return (base, int(n)) if sep and n.isdigit() else None


def describe_method(method: str, seeds: int) -> str:
    ens = _ens_base(method)
    if ens:
        return f"{LABELS.get(ens[0], ens[0])} — **ENSEMBLE of {ens[1]} seeds** (test-clip probabilities averaged)"
    what = LABELS.get(method, method)
    return f"{what} — mean of {seeds} seeds per fold" if seeds > 1 else what


def fold_scores(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Per method and fold, the seed-averaged scores (one row per method x fold)."""
    return per_fold.groupby(["method", "fold"], sort=False)[["accuracy", "uar"]].mean().reset_index()


def summarise(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over folds of the per-fold (seed-averaged) scores; ``seed_std_uar`` is the mean
    over folds of the std between seeds (the training noise a single-seed row carries)."""
    rows = []
    for m, g in per_fold.groupby("method", sort=False):
        ens = _ens_base(str(m))
        seeds = ens[1] if ens else int(g.groupby("fold").size().max())
        f = g.groupby("fold")[["accuracy", "uar"]].mean()
        seed_std = g.groupby("fold")["uar"].std(ddof=1).mean() if seeds > 1 and not ens else np.nan
        rows.append({"method": m, "what": describe_method(str(m), seeds), "folds": len(f), "seeds": seeds,
                     "accuracy_mean": f["accuracy"].mean(), "accuracy_std": f["accuracy"].std(ddof=1),
                     "uar_mean": f["uar"].mean(), "uar_std": f["uar"].std(ddof=1), "seed_std_uar": seed_std})
    return pd.DataFrame(rows).sort_values("uar_mean", ascending=False).reset_index(drop=True)


def paired_gap(per_fold: pd.DataFrame, a: str, b: str) -> tuple[float, float, int]:
    """UAR of ``a`` minus ``b`` on the same folds: mean, std over folds, number of folds ``a`` wins."""
    f = fold_scores(per_fold).pivot(index="fold", columns="method", values="uar")
    d = (f[a] - f[b]).dropna()
    return float(d.mean()), float(d.std(ddof=1)), int((d > 0).sum())


def markdown(summary: pd.DataFrame, folds_desc: str, command: str, notes: str = "",
             per_fold: pd.DataFrame | None = None) -> str:
    lines = [f"EmoDB (8 speakers, 411 clips, 7 classes), speaker-independent CV: {folds_desc}. "
             "Mean ± std over folds (multi-seed rows: of the per-fold seed-averaged score).", "",
             "| method | seeds | accuracy | UAR |", "|---|---|---|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['what']} | {int(r['seeds'])} | {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f} | "
                     f"{r['uar_mean']:.3f} ± {r['uar_std']:.3f} |")
    is_base = summary["method"].str.endswith("_svm")
    is_ens = summary["method"].map(lambda m: _ens_base(m) is not None)
    base = summary[is_base]
    for label, deep in (("stage-two model", summary[~is_base & ~is_ens]), ("seed ensemble", summary[is_ens])):
        if not len(deep) or not len(base):
            continue
        d, b = deep.iloc[0], base.iloc[0]
        gap = d["uar_mean"] - b["uar_mean"]
        verdict = "beats" if gap > 0 else "trails"
        line = (f"Best {label} ({d['method']}, {int(d['seeds'])} seed(s)) {verdict} the strongest baseline "
                f"({b['method']}) by {abs(gap) * 100:.1f} UAR points")
        if per_fold is not None:
            mu, sd, wins = paired_gap(per_fold, d["method"], b["method"])
            line += (f"; paired over the same folds: {mu * 100:+.1f} ± {sd * 100:.1f} points, "
                     f"ahead on {wins} of {int(d['folds'])} folds")
        if label == "stage-two model" and d["seeds"] > 1:
            line += f"; std between seeds within a fold: {d['seed_std_uar'] * 100:.1f} points"
        lines += ["", line + "."]
    lines += ["", f"Reproduce: `{command}`"]
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def run_emodb(root: Path = DEFAULT_ROOT, out: Path = Path("runs/emodb"), folds: int = 4, epochs: int = 20,
              speakers: Sequence[str] | None = None, models: Sequence[str] = tuple(MODELS),
              baselines: Sequence[str] = tuple(BASELINES), device: str = "cpu",
              bench: bool = True, limit: int | None = None, seeds: int = 1,
              seed_models: Sequence[str] | None = None) -> dict[str, Any]:
    """The whole check; returns per-fold and summary tables (also written under ``out``).
    ``seeds`` > 1 trains ``seed_models`` (default: all ``models``) with that many seeds per fold."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    from avemo.data.manifest import save_manifest

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = build_manifest(Path(root), folds, speakers, limit)
    manifest = save_manifest(df, out / "manifest.csv")
    timings: dict[str, float] = {}
    features = out / "features"
    if models:
        from avemo.extract.runner import run_features  # stage one: only in this benchmark script

        t = time.perf_counter()
        needed = sorted({Path(p).stem for m in models for p in MODELS[m]["data.features"].values()})
        run_features(manifest, needed, features, device=device, progress=False)
        timings["extract_s"] = time.perf_counter() - t
    parts = []
    if baselines:
        t = time.perf_counter()
        parts.append(run_baselines(df, out, baselines))
        timings["baselines_s"] = time.perf_counter() - t
    if models:
        t = time.perf_counter()
        parts.append(run_models(df, manifest, features, out, epochs, models, seeds, seed_models))
        timings["models_s"] = time.perf_counter() - t
    per_fold = pd.concat(parts, ignore_index=True)
    per_fold.to_csv(out / "per_fold.csv", index=False)
    summary = summarise(per_fold)
    summary.to_csv(out / "summary.csv", index=False)
    k = int(df["fold"].max()) + 1
    spk = df.groupby("fold")["subject"].unique().map(lambda s: "+".join(sorted(s))).tolist()
    folds_desc = f"{k} folds by speaker ({', '.join(spk)})"
    command = "python -m avemo.workflows.emodb" + (f" --folds {folds}" if folds != 4 else "") + (
        f" --epochs {epochs}" if epochs != 20 else "") + (f" --seeds {seeds}" if seeds > 1 else "") + (
        " --seed-models " + " ".join(seed_models) if seeds > 1 and seed_models else "")
    notes = (f"Deep models: {epochs} epochs, Adam 1e-3 + cosine, batch 16, label smoothing 0.1, balanced "
             "class weights, last epoch evaluated (no checkpoint selection); rows marked 30 ep train 30 "
             "epochs. SpecAugment (audio_cnn encoder options, training batches only): 2 time masks <= 10 "
             "rows, 2 frequency masks <= 8 of 64 bands, circular time shift <= 30 rows; two-stream rows use "
             "the zhou model with concat fusion (FBP where stated). Rows with 1 seed: one training run per fold "
             "(seed 0), so differences of 1-2 points between them are within noise. Rows with n seeds: "
             "seeds 0..n-1 per fold, the per-fold score is the mean over seeds; ENSEMBLE rows average the "
             "n seeds' class probabilities per test clip and score that (an n-model ensemble, n x the "
             "compute of one model). SVM: StandardScaler + "
             "linear-kernel SVC (balanced class weights), C in {1e-4..1} chosen by leave-one-speaker-out UAR on "
             "the training speakers. Wall time of this invocation (a rerun reuses cached features, "
             "functionals and finished runs): " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    md = markdown(summary, folds_desc, command, notes, per_fold)
    (out / "README_snippet.md").write_text(md)
    if bench and not speakers and not limit:
        from avemo.bench.table import write_section

        rows = [{"method": r["what"], "folds": int(r["folds"]), "seeds": int(r["seeds"]),
                 "accuracy": f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}",
                 "UAR": f"{r['uar_mean']:.3f} ± {r['uar_std']:.3f}"} for _, r in summary.iterrows()]
        verdicts = "\n\n".join(x for x in md.split("\n\n") if x.startswith("Best "))
        write_section("EmoDB speaker-independent check (audio only)", rows,
                      f"{folds_desc}. {notes}\n\n{verdicts}\n\nReproduce: `{command}`")
    return {"per_fold": per_fold, "summary": summary, "markdown": md, "out": out,
            "wall_s": time.perf_counter() - t0, "timings": timings}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``avemo emodb`` (also ``python -m avemo.workflows.emodb``)."""
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="EmoDB folder (wav/ + labels.csv)")
    p.add_argument("-o", "--out", default="runs/emodb", help="results folder (default: runs/emodb)")
    p.add_argument("--folds", type=int, default=4, help="speaker folds (0 = leave one speaker out)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs per fold (fixed budget)")
    p.add_argument("--speakers", nargs="*", help="subset of speaker ids (quick checks)")
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS),
                   metavar="MODEL", help="stage-two models to cross-validate: " + ", ".join(MODELS))
    p.add_argument("--baselines", nargs="*", default=None, choices=list(BASELINES),
                   help="opensmile baselines (default: all when the [smile] extra is installed)")
    p.add_argument("--limit", type=int, help="clips per speaker (quick checks)")
    p.add_argument("--device", default="cpu", help="feature extraction device")
    p.add_argument("--no-bench", action="store_true", help="do not write the bench_results section")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per fold (0..N-1) for --seed-models")
    p.add_argument("--seed-models", nargs="*", choices=list(MODELS), metavar="MODEL",
                   help="models trained with --seeds seeds (default: all --models); others use seed 0")


def _baselines(asked: Sequence[str] | None) -> list[str]:
    """The opensmile baselines to run: they need the optional ``[smile]`` extra (research-only
    licence), so by default they are skipped with a note when it is not installed."""
    import importlib.util

    have = importlib.util.find_spec("opensmile") is not None
    if asked is None:
        if not have:
            print("emodb: opensmile baselines skipped (pip install -e '.[smile]' to add them; "
                  "opensmile's licence is research-only)", file=sys.stderr)
        return list(BASELINES) if have else []
    if asked and not have:
        raise UsageError(f"--baselines {' '.join(asked)} needs opensmile: pip install -e '.[smile]' "
                         "(research-only licence), or drop --baselines")
    return list(asked)


def run(a: argparse.Namespace) -> int:
    if not Path(a.root).exists():
        raise UsageError(f"EmoDB not found at {a.root} (see ../shared/data/README.md; --root PATH)")
    res = run_emodb(Path(a.root), Path(a.out), a.folds, a.epochs, a.speakers, a.models,
                    _baselines(a.baselines), a.device, bench=not a.no_bench, limit=a.limit,
                    seeds=a.seeds, seed_models=a.seed_models)
    print(res["markdown"])
    print(f"outputs: {res['out']} ({res['wall_s']:.0f}s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from avemo.workflows.entry import module_main

    return module_main("emodb", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
