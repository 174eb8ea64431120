"""EmoDB: stage-two models over frame-level descriptors versus ComParE-2016 + linear SVM.

``python -m avemo.workflows.emodb_descriptors --folds 4 --seeds 3`` (and ``--folds 0``: leave one
speaker out) extracts the cached descriptor feature sets once (``--features``, default
``~/.cache/avemo/emodb/features``: ``compare_lld``, ``egemaps_lld``, ``pitch_swiftf0``,
``logmel``, ``speech_embedding``), trains the ``descriptors`` model (``fusion.models.
encoder_descriptors``: masked statistics of each stream, standardised, clipped, concatenated,
dropout, linear head) on the manifest's speaker folds with seeds 0..N-1, scores the seed
ensembles, and runs ComParE-2016 / eGeMAPS functionals + linear SVM (``workflows.emodb``: C by
leave-one-speaker-out on the training speakers) on the SAME folds. Rows report the per-fold
seed-averaged UAR, the paired per-fold gap to ComParE + SVM (mean ± std over folds) and the
folds won.

Protocol, fixed before any test fold was scored (2026-11-27) and not changed afterwards:

* recipe ``desc_all`` is THE candidate; the other rows are the ablation around it;
* statistics mean, std, p10, p50, p90 per descriptor column; z-scores clipped at ±5;
* dropout 0.5 on the concatenated statistics, linear head (no hidden layer);
* AdamW lr 1e-3, weight decay 1e-2, cosine schedule, batch 32, 60 epochs, label smoothing 0.1,
  balanced class weights; the LAST epoch is evaluated (no checkpoint or epoch selection on test
  speakers: the test fold never influences training);
* 3 seeds (0, 1, 2) per fold; both the mean of the seeds and their probability-averaged
  ensemble are reported.

No hyper-parameter was tuned on EmoDB: these are priors for a linear model on a few hundred
clips (strong input dropout and a short budget instead of an inner C search). Mixup and SWA
need the stage-two trainer (being refactored) and are not used.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avemo.errors import UsageError

DEFAULT_FEATURES = Path(os.environ.get("AVEMO_CACHE", Path.home() / ".cache" / "avemo")) / "emodb" / "features"
SMILE = {"compare": "{features}/compare_lld.h5", "egemaps": "{features}/egemaps_lld.h5"}
PITCH = {"pitch": "{features}/pitch_swiftf0.h5"}
SPECTRAL = {"logmel": "{features}/logmel.h5", "speech": "{features}/speech_embedding.h5"}
STATS = ["mean", "std", "p10", "p50", "p90"]
TRAIN = {"trainer.max_epochs": 60, "data.batch_size": 32,
         "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-2}}
DESC = {"name": "descriptors", "stats": STATS, "clip": 5.0, "dropout": 0.5}
# the Log-Mel 2-D CNN of workflows.emodb (+ SpecAugment), as a deep branch next to the statistics
LOGMEL_CNN = {"name": "audio_cnn", "channels": [16, 32, 64], "pool_time": [2, 2, 2],
              "pool_freq": [2, 2, 2], "dropout": 0.2, "time_masks": 2, "time_mask_width": 10,
              "freq_masks": 2, "freq_mask_width": 8, "time_shift": 30}

MODELS: dict[str, dict[str, Any]] = {
    # the baseline's own descriptors, learned statistics: ComParE LLD + deltas (130) x 5 stats
    "desc_compare": {"data.features": {"compare": SMILE["compare"]}, "model": {**DESC}},
    # + eGeMAPS LLDs (25) + swift-f0 pitch / voicing (4)
    "desc_smile_pitch": {"data.features": {**SMILE, **PITCH}, "model": {**DESC}},
    # THE candidate: + Log-Mel rows (64) + speech_embedding rows (96), all as statistics
    "desc_all": {"data.features": {**SMILE, **PITCH, **SPECTRAL}, "model": {**DESC}},
    # spectral streams alone (what the Log-Mel / speech_embedding statistics carry)
    "desc_spectral": {"data.features": {**SPECTRAL}, "model": {**DESC}},
    # desc_all as chosen by nested CV (workflows.emodb_nested): per-speaker normalisation, weight decay 10
    "desc_all_spk": {"data.features": {**SMILE, **PITCH, **SPECTRAL}, "data.speaker_norm": True,
                     "optim": {**TRAIN["optim"], "weight_decay": 10.0}, "model": {**DESC}},
    # desc_all + a Log-Mel CNN (SpecAugment) + FAN attention branch trained jointly (costly)
    "desc_all_cnn": {"data.features": {**SMILE, **PITCH, **SPECTRAL, "logmel_seq": "{features}/logmel.h5"},
                     "model": {**DESC, "descriptors": ["compare", "egemaps", "pitch", "logmel", "speech"],
                               "deep": {"logmel_seq": {"encoder": LOGMEL_CNN, "temporal": "fan_self"}}}},
}
DEFAULT_MODELS = ("desc_compare", "desc_smile_pitch", "desc_all", "desc_spectral")
LABELS = {
    "desc_compare": "ComParE LLDs + deltas (130 x 100 Hz) -> 5 masked statistics -> linear",
    "desc_smile_pitch": "ComParE + eGeMAPS LLDs + swift-f0 pitch -> statistics -> linear",
    "desc_all": "**ComParE + eGeMAPS LLDs + pitch + Log-Mel + speech_embedding -> statistics -> linear** "
                "(the candidate)",
    "desc_spectral": "Log-Mel + speech_embedding -> statistics -> linear",
    "desc_all_spk": "desc_all, streams z-normalised per speaker, weight decay 10 (the nested-CV recipe)",
    "desc_all_cnn": "desc_all ⊕ Log-Mel 2-D CNN + SpecAugment + FAN attention (joint)",
    "compare_svm": "ComParE-2016 functionals (6373) -> linear SVM",
    "egemaps_svm": "eGeMAPS v02 functionals (88) -> linear SVM",
}
FEATURE_SETS = ("compare_lld", "egemaps_lld", "pitch_swiftf0", "logmel", "speech_embedding")


def bundles(features: Path, which: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The grid's ``method`` axis: each model's config keys, feature paths filled in."""
    out = {}
    for name in which:
        spec = MODELS[name]
        b: dict[str, Any] = {**TRAIN}
        for k, v in spec.items():
            b[k] = {m: p.format(features=features) for m, p in v.items()} if k == "data.features" else v
        out[name] = b
    return out


def grid_rows(df: pd.DataFrame, manifest: Path, features: Path, out_dir: Path, which: Sequence[str],
              seeds: Sequence[int]) -> pd.DataFrame:
    """model x seed x fold as one ablation grid -> one row per run (speaker disjointness checked)."""
    from avemo.workflows.ablate import run_grid
    from avemo.workflows.emodb import base_config, run_rows

    k = int(df["fold"].max()) + 1
    grid = {"name": "emodb_descriptors",
            "base": base_config(manifest, int(TRAIN["trainer.max_epochs"]), sorted(df["label"].unique())),
            "axes": {"method": bundles(features, which), "seed": list(seeds)},
            "cv": {"method": "manifest", "k": k, "val": "test"}, "report": {"top": 2, "examples": 3}}
    return pd.DataFrame(run_rows(run_grid(grid, out_dir=out_dir, quiet=False)["table"]))


def with_ensembles(per_run: pd.DataFrame, n_seeds: int) -> pd.DataFrame:
    """Adds a ``<method>_ens<n>`` row per fold: the seeds' test probabilities averaged per clip."""
    from avemo.workflows.emodb import seed_ensemble

    ens = []
    for (m, f), g in per_run.groupby(["method", "fold"], sort=True):
        if n_seeds > 1 and len(g) == n_seeds:
            sc = seed_ensemble(g)
            ens.append({"method": f"{m}_ens{n_seeds}", "fold": int(f), "seed": -1, "accuracy": sc["accuracy"],
                        "uar": sc["uar"], "test_speakers": g["test_speakers"].iloc[0],
                        "train_speakers": g["train_speakers"].iloc[0], "run_dir": ""})
    return pd.concat([per_run, pd.DataFrame(ens)], ignore_index=True) if ens else per_run


def baseline_rows(df: pd.DataFrame, cache: Path, which: Sequence[str]) -> pd.DataFrame:
    """ComParE / eGeMAPS functionals + linear SVM on the manifest's folds (``workflows.emodb``)."""
    from avemo.workflows.emodb import BASELINES, opensmile_functionals, svm_fold

    y = df["label"].astype(str).to_numpy()
    groups = df["subject"].astype(str).to_numpy()
    folds = df["fold"].astype(int).to_numpy()
    rows = []
    for name in which:
        x = np.nan_to_num(opensmile_functionals(df, BASELINES[name], cache / f"{name}.parquet").to_numpy(np.float64))
        for f in sorted(set(folds)):
            train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            assert not set(groups[train]) & set(groups[test]), "speaker in train and test"
            pred, c = svm_fold(x, y, groups, train, test)
            from sklearn.metrics import accuracy_score, balanced_accuracy_score

            rows.append({"method": f"{name}_svm", "fold": int(f), "seed": 0,
                         "accuracy": float(accuracy_score(y[test], pred)),
                         "uar": float(balanced_accuracy_score(y[test], pred)), "C": c,
                         "test_speakers": " ".join(sorted(set(groups[test]))),
                         "train_speakers": " ".join(sorted(set(groups[train])))})
    return pd.DataFrame(rows)


def describe(method: str, seeds: int) -> str:
    base, sep, n = method.rpartition("_ens")
    if sep and n.isdigit():
        return f"{LABELS.get(base, base)} — ENSEMBLE of {n} seeds"
    what = LABELS.get(method, method)
    return f"{what} — mean of {seeds} seeds" if seeds > 1 else what


def table(per_fold: pd.DataFrame, baseline: str = "compare_svm") -> pd.DataFrame:
    """Per method: UAR / accuracy mean ± std over folds (seed-averaged per fold) and the paired
    per-fold UAR gap to ``baseline`` (mean, std, folds won)."""
    from avemo.workflows.emodb import paired_gap, summarise

    s = summarise(per_fold)
    s["what"] = [describe(m, int(n)) for m, n in zip(s["method"], s["seeds"], strict=True)]
    gaps = [paired_gap(per_fold, m, baseline) if m != baseline and baseline in set(per_fold["method"])
            else (np.nan, np.nan, -1) for m in s["method"]]
    s["gap_mean"], s["gap_std"], s["folds_won"] = zip(*gaps, strict=True)
    return s


def markdown(s: pd.DataFrame, folds_desc: str, command: str) -> str:
    lines = [f"EmoDB, {folds_desc}; UAR mean ± std over folds; gap = paired per-fold UAR difference to "
             "ComParE-2016 + linear SVM (mean ± std over folds, folds won).", "",
             "| method | seeds | accuracy | UAR | gap vs ComParE+SVM (points) | folds won |", "|---|---|---|---|---|---|"]
    for _, r in s.iterrows():
        gap = "" if np.isnan(r["gap_mean"]) else f"{r['gap_mean'] * 100:+.1f} ± {r['gap_std'] * 100:.1f}"
        won = "" if r["folds_won"] < 0 else f"{int(r['folds_won'])}/{int(r['folds'])}"
        lines.append(f"| {r['what']} | {int(r['seeds'])} | {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f} | "
                     f"{r['uar_mean']:.3f} ± {r['uar_std']:.3f} | {gap} | {won} |")
    return "\n".join(lines + ["", f"Reproduce: `{command}`"]) + "\n"


def run_experiment(root: Path, out: Path, features: Path, folds: int = 4, seeds: int = 3,
                   models: Sequence[str] = DEFAULT_MODELS, baselines: Sequence[str] = ("compare", "egemaps")
                   ) -> dict[str, Any]:
    """The whole comparison (see the module doc); writes per_fold.csv, summary.csv, README_snippet.md."""
    from avemo.data.manifest import save_manifest
    from avemo.extract.runner import run_features
    from avemo.workflows.emodb import build_manifest

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    df = build_manifest(root, folds)
    manifest = save_manifest(df, out / "manifest.csv")
    needed = sorted({Path(p).stem for m in models for p in MODELS[m]["data.features"].values()})
    if models:
        run_features(manifest, needed, features, progress=False)
    parts = []
    if baselines:
        done = out / "baselines.csv"  # the SVM rows of this manifest, reused on a rerun
        have = pd.read_csv(done) if done.exists() else None
        if have is None or set(have["method"]) != {f"{b}_svm" for b in baselines}:
            have = baseline_rows(df, features.parent / "opensmile", baselines)
            have.to_csv(done, index=False)
        parts.append(have)
    if models:
        parts.append(with_ensembles(grid_rows(df, manifest, features, out / "grid", models, range(seeds)), seeds))
    per_fold = pd.concat(parts, ignore_index=True)
    per_fold.to_csv(out / "per_fold.csv", index=False)
    s = table(per_fold)
    s.to_csv(out / "summary.csv", index=False)
    k = int(df["fold"].max()) + 1
    spk = df.groupby("fold")["subject"].unique().map(lambda x: "+".join(sorted(x))).tolist()
    desc = f"{k} speaker folds ({', '.join(spk)})" if folds else f"leave one speaker out ({k} folds)"
    command = (f"python -m avemo.workflows.emodb_descriptors --folds {folds} --seeds {seeds}"
               + (f" --models {' '.join(models)}" if tuple(models) != DEFAULT_MODELS else ""))
    md = markdown(s, desc, command)
    (out / "README_snippet.md").write_text(md)
    return {"per_fold": per_fold, "summary": s, "markdown": md, "wall_s": time.perf_counter() - t0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from avemo.workflows.emodb import DEFAULT_ROOT

    p.add_argument("--root", default=str(DEFAULT_ROOT), help="EmoDB folder (wav/ + labels.csv)")
    p.add_argument("-o", "--out", default=None, help="results folder (default: runs/emodb_descriptors_<folds>)")
    p.add_argument("--features", default=str(DEFAULT_FEATURES), help="feature cache folder (extracted once)")
    p.add_argument("--folds", type=int, default=4, help="speaker folds (0 = leave one speaker out)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per fold (0..N-1)")
    p.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), choices=list(MODELS), metavar="MODEL",
                   help="models: " + ", ".join(MODELS))
    p.add_argument("--baselines", nargs="*", default=["compare", "egemaps"], choices=["compare", "egemaps"])


def run(a: argparse.Namespace) -> int:
    if not Path(a.root).exists():
        raise UsageError(f"EmoDB not found at {a.root} (see ../shared/data/README.md; --root PATH)")
    if a.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {a.seeds}")
    from avemo.extract.audio.opensmile_lld import require_opensmile

    if a.baselines or any("compare" in MODELS[m]["data.features"] for m in a.models):
        require_opensmile("compare_lld / the SVM baselines")
    out = Path(a.out or f"runs/emodb_descriptors_{'loso' if a.folds == 0 else a.folds}")
    res = run_experiment(Path(a.root), out, Path(a.features), a.folds, a.seeds, a.models, a.baselines)
    print(res["markdown"])
    print(f"outputs: {out} ({res['wall_s']:.0f}s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from avemo.workflows.entry import module_main

    return module_main("emodb_descriptors", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
