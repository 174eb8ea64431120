"""EmoDB real labelled check: audio-only, speaker-independent cross-validation.

``python -m avemo.workflows.emodb`` builds the EmoDB manifest (speaker folds), extracts the
cached ``logmel`` and ``speech_embedding`` feature sets with stage one (the only place in
workflows that calls the extraction runner), cross-validates two stage-two models as an
ablation grid on the manifest's speaker folds -- (a) a Log-Mel 2-D CNN trained here, (b)
speech_embedding rows + FAN self-attention pooling -- and scores a classical baseline on the
SAME folds: eGeMAPS v02 and ComParE-2016 functionals (opensmile) + a linear SVM on
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

from avemo.errors import UsageError, UserError

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb-8spk"
FEATURE_SETS = ("logmel", "speech_embedding")
BASELINES = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)

# training-only augmentation of the audio_cnn encoder (rows are 20 ms apart after max_rows=100
# on a 2 s clip; longer clips are subsampled more): 2 time masks <= 10 rows, 2 freq masks <= 8
# of 64 Mel bands, circular shift <= 30 rows
SPEC_AUGMENT = {"time_masks": 2, "time_mask_width": 10, "freq_masks": 2, "freq_mask_width": 8,
                "time_shift": 30}
# the small 2-D CNN over Log-Mel rows shared by every Log-Mel model below
LOGMEL_CNN = {"name": "audio_cnn", "channels": [16, 32, 64], "pool_time": [2, 2, 2],
              "pool_freq": [2, 2, 2], "dropout": 0.2}

MODELS: dict[str, dict[str, Any]] = {
    # Log-Mel rows [64] per 10 ms -> 2-D CNN trained here -> FAN self-attention -> 7 classes
    "logmel_cnn": {
        "data.features": {"audio": "{features}/logmel.h5"},
        "data.max_rows": 100,  # 2 s at 10 ms hop = 200 rows; every 2nd row halves the CNN cost
        "model": {"name": "unimodal", "modality": "audio",
                  "encoder": {**LOGMEL_CNN},
                  "temporal": "fan_self"},
    },
    # as logmel_cnn + SpecAugment-style time/frequency masks and a random circular time shift
    # during training only (encoder options), 30 epochs since augmentation slows fitting
    "logmel_cnn_aug": {
        "data.features": {"audio": "{features}/logmel.h5"},
        "data.max_rows": 100,
        "trainer.max_epochs": 30,
        "model": {"name": "unimodal", "modality": "audio",
                  "encoder": {**LOGMEL_CNN, **SPEC_AUGMENT},
                  "temporal": "fan_self"},
    },
    # two audio streams, each with its own encoder + FAN self-attention, pooled vectors
    # concatenated (zhou's fusion; its "visual" role is simply the Log-Mel stream here)
    "logmel_aug_speech_concat": {
        "data.features": {"audio": "{features}/logmel.h5", "speech": "{features}/speech_embedding.h5"},
        "data.max_rows": 100,
        "trainer.max_epochs": 30,
        "model": {"name": "zhou", "visual": "audio", "audio": ["speech"], "fusion": "concat",
                  "temporal": "fan_self",
                  "encoder": {"name": "mlp", "per_modality": {"audio": {**LOGMEL_CNN, **SPEC_AUGMENT}}}},
    },
    # ablation: the two-stream concat without SpecAugment / time shift, the default 20 epochs
    "logmel_speech_concat": {
        "data.features": {"audio": "{features}/logmel.h5", "speech": "{features}/speech_embedding.h5"},
        "data.max_rows": 100,
        "model": {"name": "zhou", "visual": "audio", "audio": ["speech"], "fusion": "concat",
                  "temporal": "fan_self",
                  "encoder": {"name": "mlp", "per_modality": {"audio": {**LOGMEL_CNN}}}},
    },
    # as logmel_aug_speech_concat, more regularised (it overfits: train loss ~0.65, val ~1.3):
    # smaller speech MLP with input dropout, dropout before the head
    "logmel_aug_speech_concat_reg": {
        "data.features": {"audio": "{features}/logmel.h5", "speech": "{features}/speech_embedding.h5"},
        "data.max_rows": 100,
        "trainer.max_epochs": 30,
        "model": {"name": "zhou", "visual": "audio", "audio": ["speech"], "fusion": "concat",
                  "temporal": "fan_self", "head": {"dropout": 0.3},
                  "encoder": {"per_modality": {
                      "speech": {"name": "mlp", "hidden": [128], "dropout": 0.3, "input_dropout": 0.2},
                      "audio": {**LOGMEL_CNN, **SPEC_AUGMENT}}}},
    },
    # as logmel_aug_speech_concat_reg, the two pooled vectors fused by factorised bilinear
    # pooling (FBP, k=5 factors, 256 outputs) instead of concatenation
    "logmel_aug_speech_fbp_reg": {
        "data.features": {"audio": "{features}/logmel.h5", "speech": "{features}/speech_embedding.h5"},
        "data.max_rows": 100,
        "trainer.max_epochs": 30,
        "model": {"name": "zhou", "visual": "audio", "audio": ["speech"],
                  "fusion": {"name": "fbp", "k": 5, "o": 256},
                  "temporal": "fan_self", "head": {"dropout": 0.3},
                  "encoder": {"per_modality": {
                      "speech": {"name": "mlp", "hidden": [128], "dropout": 0.3, "input_dropout": 0.2},
                      "audio": {**LOGMEL_CNN, **SPEC_AUGMENT}}}},
    },
    # as logmel_cnn_aug, pooled by mean + std statistics instead of attention
    "logmel_cnn_aug_stats": {
        "data.features": {"audio": "{features}/logmel.h5"},
        "data.max_rows": 100,
        "trainer.max_epochs": 30,
        "model": {"name": "unimodal", "modality": "audio",
                  "encoder": {**LOGMEL_CNN, **SPEC_AUGMENT},
                  "temporal": "stats"},
    },
    # as logmel_aug_speech_concat, both streams pooled by mean + std statistics
    "logmel_aug_speech_stats_concat": {
        "data.features": {"audio": "{features}/logmel.h5", "speech": "{features}/speech_embedding.h5"},
        "data.max_rows": 100,
        "trainer.max_epochs": 30,
        "model": {"name": "zhou", "visual": "audio", "audio": ["speech"], "fusion": "concat",
                  "temporal": "stats",
                  "encoder": {"name": "mlp", "per_modality": {"audio": {**LOGMEL_CNN, **SPEC_AUGMENT}}}},
    },
    # pretrained speech_embedding rows [96] -> MLP -> FAN self-attention pooling -> 7 classes
    "speech_embedding_att": {
        "data.features": {"audio": "{features}/speech_embedding.h5"},
        "model": {"name": "unimodal", "modality": "audio",
                  "encoder": {"name": "mlp"}, "temporal": "fan_self"},
    },
}


def build_manifest(root: Path, folds: int, speakers: Sequence[str] | None = None,
                   limit: int | None = None) -> pd.DataFrame:
    """EmoDB manifest via the data adapter (``folds`` speaker folds; 0 = leave one speaker out);
    ``speakers`` / ``limit`` (clips per speaker) make quick subsets."""
    from avemo.data.adapters import build_manifest as adapter_manifest

    df = adapter_manifest("emodb", root, folds=folds)
    if limit:
        df = df.sort_values("clip_id").groupby("subject", sort=True).head(int(limit)).reset_index(drop=True)
    if speakers:
        keep = {str(s).zfill(2) for s in speakers}
        df = df[df["subject"].astype(str).isin(keep)].reset_index(drop=True)
        subs = sorted(df["subject"].unique())
        k = folds or len(subs)
        df["fold"] = [sorted(subs).index(s) * k // len(subs) for s in df["subject"]]
    df["split"] = "train"
    return df


def base_config(manifest: Path, epochs: int, classes: Sequence[str]) -> dict[str, Any]:
    return {
        "name": "emodb",
        "seed": 0,
        "data": {"manifest": str(manifest), "features": {}, "classes": list(classes), "batch_size": 16},
        "task": {"type": "clip"},
        "split": {"method": "kfold", "use_manifest_folds": True, "val": "test"},
        "model": {"name": "unimodal"},
        "loss": {"name": "cross_entropy", "label_smoothing": 0.1, "class_weights": "balanced"},
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4},
        "schedule": {"name": "cosine"},
        # fixed budget, last epoch: "none" is never logged, so no best.pt is ever selected
        "trainer": {"max_epochs": epochs, "accelerator": "auto", "early_stopping": None, "monitor": "none"},
        "output": {"plots": False},
    }


def _model_bundles(features: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for name, spec in MODELS.items():
        b: dict[str, Any] = {}
        for k, v in spec.items():
            if k == "data.features":
                b["data.features"] = {m: p.format(features=features) for m, p in v.items()}
            else:
                b[k] = v
        out[name] = b
    return out


# ----------------------------------------------------------------------------- classical baseline


def opensmile_functionals(df: pd.DataFrame, feature_set: str, cache: Path) -> pd.DataFrame:
    """Per-clip functionals (rows in manifest order), cached as Parquet next to the features."""
    import opensmile

    if cache.exists():
        have = pd.read_parquet(cache)
        if set(df["clip_id"]) <= set(have.index):
            return have.loc[df["clip_id"]]
    smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                            feature_level=opensmile.FeatureLevel.Functionals)
    rows = [smile.process_file(str(p)).to_numpy()[0] for p in df["audio"]]
    out = pd.DataFrame(np.asarray(rows, np.float64), index=pd.Index(df["clip_id"], name="clip_id"),
                       columns=smile.feature_names)
    cache.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(cache)
    return out


def svm_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, train: np.ndarray, test: np.ndarray,
             c_grid: Sequence[float] = C_GRID) -> tuple[np.ndarray, float]:
    """Standardise + linear-kernel SVM (libsvm, one-vs-one, balanced class weights); C by
    leave-one-speaker-out inside the training speakers (UAR); returns test predictions and C.
    The kernel form is fast here: a few hundred clips, thousands of functionals."""
    from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    pipe = make_pipeline(StandardScaler(), SVC(kernel="linear", class_weight="balanced"))
    inner = LeaveOneGroupOut()
    search = GridSearchCV(pipe, {"svc__C": list(c_grid)}, scoring="balanced_accuracy",
                          cv=inner.split(x[train], y[train], groups[train]), n_jobs=1)
    search.fit(x[train], y[train])
    return search.predict(x[test]), float(search.best_params_["svc__C"])


def _scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)), "uar": float(balanced_accuracy_score(y_true, y_pred))}


def run_baselines(df: pd.DataFrame, out: Path, which: Sequence[str]) -> pd.DataFrame:
    rows = []
    y = df["label"].astype(str).to_numpy()
    groups = df["subject"].astype(str).to_numpy()
    folds = df["fold"].astype(int).to_numpy()
    for name in which:
        feats = opensmile_functionals(df, BASELINES[name], out / "opensmile" / f"{name}.parquet")
        x = np.nan_to_num(feats.to_numpy(np.float64))
        for f in sorted(set(folds)):
            train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            assert not set(groups[train]) & set(groups[test]), "speaker in train and test"
            pred, c = svm_fold(x, y, groups, train, test)
            rows.append({"method": f"{name}_svm", "fold": int(f), **_scores(y[test], pred), "C": c,
                         "test_speakers": " ".join(sorted(set(groups[test]))),
                         "train_speakers": " ".join(sorted(set(groups[train])))})
    return pd.DataFrame(rows)


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
    grid = {"name": "emodb", "base": base_config(manifest, epochs, classes),
            "axes": axes, "cv": {"method": "manifest", "k": k, "val": "test"},
            "report": {"top": 2, "examples": 3}}
    res = run_grid(grid, out_dir=out_dir, quiet=False)
    rows = []
    for _, r in res["table"].iterrows():
        if r.get("status") != "done":
            raise RuntimeError(f"EmoDB cell {r['cell_id']} did not finish: {r.get('error')}")
        sp = json.loads((Path(r["run_dir"]) / "splits.json").read_text())
        tr, te = set(sp["subjects"]["train"]), set(sp["subjects"]["test"])
        if tr & te:
            raise RuntimeError(f"{r['cell_id']}: speakers {sorted(tr & te)} in train and test")
        rows.append({"method": r["method"], "fold": int(r["fold"]),
                     "seed": int(r["seed"]) if seeds is not None else 0,
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


LABELS = {
    "logmel_cnn": "Log-Mel (64 bands) -> 2-D CNN trained here -> FAN self-attention",
    "logmel_cnn_aug": "Log-Mel -> 2-D CNN + SpecAugment masks/time shift (train only), 30 epochs -> FAN self-attention",
    "logmel_aug_speech_concat": "[Log-Mel -> CNN + SpecAugment, 30 ep] ⊕ [speech_embedding -> MLP], each FAN "
                                "self-attention, concat -> head",
    "logmel_speech_concat": "[Log-Mel -> CNN, no augmentation] ⊕ [speech_embedding -> MLP], each FAN "
                            "self-attention, concat -> head (ablation)",
    "logmel_aug_speech_concat_reg": "[Log-Mel -> CNN + SpecAugment, 30 ep] ⊕ [speech_embedding -> MLP 128, "
                                    "dropout 0.3, input dropout 0.2], each FAN self-attention, concat -> "
                                    "dropout 0.3 -> head",
    "logmel_aug_speech_fbp_reg": "[Log-Mel -> CNN + SpecAugment, 30 ep] ⊕ [speech_embedding -> MLP 128, "
                                 "dropout 0.3, input dropout 0.2], each FAN self-attention, FBP (k=5, o=256) "
                                 "-> dropout 0.3 -> head",
    "logmel_cnn_aug_stats": "Log-Mel -> 2-D CNN + SpecAugment (train only), 30 epochs -> mean+std stats pooling",
    "logmel_aug_speech_stats_concat": "[Log-Mel -> CNN + SpecAugment, 30 ep] ⊕ [speech_embedding -> MLP], each "
                                      "mean+std stats pooling, concat -> head",
    "speech_embedding_att": "speech_embedding (openwakeword ONNX, 96-d) -> MLP -> FAN self-attention",
    "egemaps_svm": "eGeMAPS v02 functionals (88) -> linear SVM",
    "compare_svm": "ComParE-2016 functionals (6373) -> linear SVM",
}


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
        from avemo.data.benchtable import write_section

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
    p = argparse.ArgumentParser(prog="python -m avemo.workflows.emodb", description=__doc__.split("\n")[0])
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except UserError as e:  # the user's to fix: one message, no traceback
        print(f"avemo emodb: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
