"""EmoDB: the descriptor-statistics recipe chosen by nested CV on the training speakers.

``python -m avemo.workflows.emodb_nested --folds 4`` (and ``--folds 0``: leave one speaker out)
reuses the cached descriptor feature sets of ``workflows.emodb_descriptors`` (``--features``):
per clip and stream the masked statistics of ``fusion.models.encoder_descriptors``
(``descriptor_stats``), then the ``descriptors`` model's head -- BatchNorm standardisation over
the training batches, clip at ±5, dropout 0.5, linear -- trained by a plain loop that mirrors the
stage-two recipe (AdamW lr 1e-3, cosine per epoch, batch 32 in a seeded order per epoch, 60
epochs, label smoothing 0.1, balanced class weights, LAST epoch): seconds per fit with one thread,
so a nested CV is affordable (the statistics are computed once instead of every batch).

Protocol, written down and committed BEFORE any outer test fold was scored (2026-11-27):

* variant set (8): per-speaker normalisation ``speaker_norm`` in {off, on} x AdamW weight decay
  in {1e-2, 1e-1, 1, 10}; streams always the five of ``desc_all`` (compare_lld, egemaps_lld,
  pitch_swiftf0, logmel, speech_embedding); everything else as above, unchanged;
* ``speaker_norm`` (``fusion.speaker_norm``): every column of every frame-level stream z-normalised
  per speaker over that speaker's own valid frames, no labels, no other speaker's data;
  transductive per speaker (a test speaker is normalised with its own unlabelled clips);
* choice per outer fold: inner leave-one-speaker-out over the outer fold's TRAINING speakers only,
  seed 0, criterion = mean inner UAR over the inner folds, ties to the earlier variant in the
  order above (off before on, smaller weight decay first); the test speakers are never seen;
* the chosen variant is then trained on all training speakers with seeds 0, 1, 2 and scored on
  the outer test fold: THE candidate row (``nested``) is the mean of the 3 seeds per fold (and,
  labelled, their probability ensemble); the fixed variants' outer scores are reported as an
  ablation only (never used to choose anything);
* baselines on the same folds: ComParE-2016 functionals + linear SVM (C by inner
  leave-one-speaker-out, ``workflows.emodb_baseline``), raw and with the same per-speaker
  normalisation (functionals z-normalised per speaker, a clip-level row per clip);
* the recipe for new corpora (``workflows/configs/speech_emotion.yaml``) is the variant the same
  inner CV picks over ALL speakers (``--folds``-independent; printed as ``deploy``).

The SVM + ComParE functionals as an extra stream of the head was considered and left out of the
set: it needs a functionals feature set the stage-two config cannot name yet.
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

STREAMS = {"compare": "compare_lld", "egemaps": "egemaps_lld", "pitch": "pitch_swiftf0",
           "logmel": "logmel", "speech": "speech_embedding"}
STATS = ("mean", "std", "p10", "p50", "p90")
WEIGHT_DECAYS = (1e-2, 1e-1, 1.0, 10.0)
SPEAKER_NORM = (False, True)
VARIANTS = [(sn, wd) for sn in SPEAKER_NORM for wd in WEIGHT_DECAYS]
FIT = {"epochs": 60, "batch_size": 32, "lr": 1e-3, "clip": 5.0, "dropout": 0.5, "label_smoothing": 0.1}


def variant_name(speaker_norm: bool, wd: float) -> str:
    return f"desc_all{'_spk' if speaker_norm else ''}_wd{wd:g}"


def clip_statistics(features: Path, df: pd.DataFrame, speaker_norm: bool) -> np.ndarray:
    """``[n_clips, D]``: the five statistics of every stream per clip (manifest order),
    streams optionally z-normalised per speaker first (``fusion.speaker_norm``)."""
    import torch

    from avemo.fusion.features import load_features
    from avemo.fusion.models.encoder_descriptors import descriptor_stats
    from avemo.fusion.speaker_norm import speaker_normalised

    ids = df["clip_id"].astype(str).tolist()
    who = dict(zip(ids, df["subject"].astype(str), strict=True))
    parts = []
    for fs in STREAMS.values():
        a = load_features(features / f"{fs}.h5")
        if speaker_norm:
            a = speaker_normalised(a, who)
        rows = []
        for c in ids:
            lo, hi = a.rows_of(c)
            x = a.values[lo:hi].reshape(1, hi - lo, -1).float()
            rows.append(descriptor_stats(x, a.row_mask[lo:hi][None], STATS)[0])
        parts.append(torch.stack(rows).numpy())
    return np.concatenate(parts, 1).astype(np.float32)


def fit_predict(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, n_classes: int,
                weight_decays: Sequence[float], seed: int) -> np.ndarray:
    """Train one linear head per weight decay (shared batch order and standardisation, own
    dropout masks and AdamW group) on ``train``; class probabilities ``[len(wd), n_test, C]``
    at the last epoch."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    xt = torch.from_numpy(x[train])
    yt = torch.from_numpy(y[train]).long()
    counts = torch.bincount(yt, minlength=n_classes).double()
    weights = (len(yt) / (n_classes * counts.clamp_min(1))).float()
    norm = nn.BatchNorm1d(x.shape[1], affine=False, momentum=None)
    heads = nn.ModuleList([nn.Linear(x.shape[1], n_classes) for _ in weight_decays])
    drop = nn.Dropout(FIT["dropout"])
    opt = torch.optim.AdamW([{"params": h.parameters(), "weight_decay": float(wd)}
                             for h, wd in zip(heads, weight_decays, strict=True)], lr=FIT["lr"])
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=FIT["epochs"])
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=FIT["label_smoothing"])
    c = FIT["clip"]
    norm.train()
    for epoch in range(FIT["epochs"]):
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(len(yt), generator=g)
        for i in range(0, len(order), FIT["batch_size"]):
            b = order[i:i + FIT["batch_size"]]
            if len(b) < 2:  # as the model: a batch of one clip uses the running statistics
                z = nn.functional.batch_norm(xt[b], norm.running_mean, norm.running_var, training=False)
            else:
                z = norm(xt[b])
            z = z.clamp(-c, c)
            loss = sum(loss_fn(h(drop(z)), yt[b]) for h in heads)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sch.step()
    norm.eval()
    with torch.no_grad():
        z = norm(torch.from_numpy(x[test])).clamp(-c, c)
        return torch.stack([h(z).softmax(-1) for h in heads]).numpy()


def uar(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, pred))


def inner_choice(xs: dict[bool, np.ndarray], y: np.ndarray, groups: np.ndarray, train: np.ndarray,
                 n_classes: int) -> tuple[tuple[bool, float], pd.DataFrame]:
    """The variant with the best mean UAR over leave-one-speaker-out folds inside ``train``
    (seed 0; ties to the earlier variant); also the per-variant inner scores."""
    speakers = sorted(set(groups[train]))
    scores: dict[tuple[bool, float], list[float]] = {v: [] for v in VARIANTS}
    for s in speakers:
        tr, te = train[groups[train] != s], train[groups[train] == s]
        for sn in SPEAKER_NORM:
            p = fit_predict(xs[sn], y, tr, te, n_classes, WEIGHT_DECAYS, seed=0)
            for wd, pw in zip(WEIGHT_DECAYS, p, strict=True):
                scores[(sn, wd)].append(uar(y[te], pw.argmax(1)))
    table = pd.DataFrame([{"variant": variant_name(*v), "speaker_norm": v[0], "weight_decay": v[1],
                           "inner_uar": float(np.mean(sc)), "inner_folds": len(sc)} for v, sc in scores.items()])
    best = max(VARIANTS, key=lambda v: (np.mean(scores[v]), -VARIANTS.index(v)))
    return best, table


def svm_rows(func: np.ndarray, y_str: np.ndarray, groups: np.ndarray, folds: np.ndarray) -> list[dict[str, Any]]:
    from avemo.fusion.speaker_norm import normalise_groups
    from avemo.workflows.emodb_baseline import svm_fold

    rows = []
    for name, x in (("compare_svm", func), ("compare_svm_spk", normalise_groups(func, np.ones(len(func), bool), groups))):
        for f in sorted(set(folds)):
            train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
            assert not set(groups[train]) & set(groups[test]), "speaker in train and test"
            pred, c = svm_fold(x, y_str, groups, train, test)
            rows.append({"method": name, "fold": int(f), "seed": 0, "uar": uar(y_str[test], pred),
                         "accuracy": float((pred == y_str[test]).mean()), "C": c,
                         "test_speakers": " ".join(sorted(set(groups[test])))})
    return rows


def run_nested(root: Path, out: Path, features: Path, folds: int = 4, seeds: int = 3,
               ablation: bool = True) -> dict[str, Any]:
    """The whole nested comparison; writes inner.csv, per_fold.csv, summary.csv, README_snippet.md."""
    from avemo.workflows.emodb import build_manifest, opensmile_functionals, paired_gap, summarise

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    df = build_manifest(root, folds)
    classes = sorted(df["label"].unique())
    y_str = df["label"].astype(str).to_numpy()
    y = np.array([classes.index(v) for v in y_str])
    groups = df["subject"].astype(str).to_numpy()
    fold = df["fold"].astype(int).to_numpy()
    xs = {}
    for sn in SPEAKER_NORM:
        cache = out / f"stats_{'spk' if sn else 'raw'}.npy"
        xs[sn] = np.load(cache) if cache.exists() else clip_statistics(features, df, sn)
        np.save(cache, xs[sn])
    func = np.nan_to_num(opensmile_functionals(df, "ComParE_2016", features.parent / "opensmile" / "compare.parquet")
                         .to_numpy(np.float64))
    rows = svm_rows(func, y_str, groups, fold)
    inner_tables, chosen = [], {}
    for f in sorted(set(fold)):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        assert not set(groups[train]) & set(groups[test]), "speaker in train and test"
        best, tab = inner_choice(xs, y, groups, train, len(classes))  # training speakers only
        chosen[int(f)] = best
        inner_tables.append(tab.assign(fold=int(f), chosen=tab["variant"] == variant_name(*best)))
        print(f"fold {f}: inner choice {variant_name(*best)}", flush=True)
        todo = VARIANTS if ablation else [best]
        for sn in SPEAKER_NORM:
            wds = [wd for (s, wd) in todo if s == sn]
            if not wds:
                continue
            ens = {}
            for seed in range(seeds):
                p = fit_predict(xs[sn], y, train, test, len(classes), wds, seed)
                for wd, pw in zip(wds, p, strict=True):
                    base = {"fold": int(f), "seed": seed, "uar": uar(y[test], pw.argmax(1)),
                            "accuracy": float((pw.argmax(1) == y[test]).mean()),
                            "test_speakers": " ".join(sorted(set(groups[test])))}
                    ens.setdefault(wd, []).append(pw)
                    if ablation:
                        rows.append({"method": variant_name(sn, wd), **base})
                    if (sn, wd) == best:
                        rows.append({"method": "nested", "chosen": variant_name(sn, wd), **base})
            pe = np.mean(ens[best[1]], 0) if best[0] == sn and best[1] in ens else None
            if pe is not None:
                rows.append({"method": f"nested_ens{seeds}", "fold": int(f), "seed": -1,
                             "uar": uar(y[test], pe.argmax(1)), "accuracy": float((pe.argmax(1) == y[test]).mean()),
                             "chosen": variant_name(*best), "test_speakers": " ".join(sorted(set(groups[test])))})
    per_fold = pd.DataFrame(rows)
    per_fold.to_csv(out / "per_fold.csv", index=False)
    pd.concat(inner_tables).to_csv(out / "inner.csv", index=False)
    s = summarise(per_fold)
    gaps = {b: [paired_gap(per_fold, m, b) if m != b else (np.nan, np.nan, -1) for m in s["method"]]
            for b in ("compare_svm", "compare_svm_spk")}
    for b, g in gaps.items():
        s[f"gap_{b}"] = [f"{m * 100:+.1f} ± {sd * 100:.1f} ({w}/{len(set(fold))})" if w >= 0 else "" for m, sd, w in g]
    s.to_csv(out / "summary.csv", index=False)
    k = len(set(fold))
    desc = f"{k} speaker folds" if folds else f"leave one speaker out ({k} folds)"
    lines = [f"EmoDB, {desc}; UAR mean ± std over folds (seed-averaged per fold); gap = paired per-fold "
             "UAR difference in points (mean ± std over folds, folds won).", "",
             "| method | seeds | UAR | gap vs ComParE+SVM | gap vs ComParE+SVM, per-speaker norm |",
             "|---|---|---|---|---|"]
    for _, r in s.iterrows():
        lines.append(f"| {r['method']} | {int(r['seeds'])} | {r['uar_mean']:.3f} ± {r['uar_std']:.3f} | "
                     f"{r['gap_compare_svm']} | {r['gap_compare_svm_spk']} |")
    lines += ["", "Inner choice per outer fold: " + ", ".join(f"{f}: {variant_name(*v)}" for f, v in chosen.items()),
              "", f"Reproduce: `python -m avemo.workflows.emodb_nested --folds {folds} --seeds {seeds}`"]
    md = "\n".join(lines) + "\n"
    (out / "README_snippet.md").write_text(md)
    return {"per_fold": per_fold, "summary": s, "markdown": md, "chosen": chosen, "wall_s": time.perf_counter() - t0}


def deploy_choice(root: Path, out: Path, features: Path) -> tuple[tuple[bool, float], pd.DataFrame]:
    """The variant the inner CV picks over ALL speakers (leave-one-speaker-out): the recipe for
    new corpora (no test fold exists to look at)."""
    from avemo.workflows.emodb import build_manifest

    out.mkdir(parents=True, exist_ok=True)
    df = build_manifest(root, 0)
    classes = sorted(df["label"].unique())
    y = np.array([classes.index(v) for v in df["label"].astype(str)])
    xs = {sn: clip_statistics(features, df, sn) for sn in SPEAKER_NORM}
    best, tab = inner_choice(xs, y, df["subject"].astype(str).to_numpy(), np.arange(len(df)), len(classes))
    tab.to_csv(out / "deploy_inner.csv", index=False)
    return best, tab


def add_arguments(p: argparse.ArgumentParser) -> None:
    from avemo.workflows.emodb import DEFAULT_ROOT
    from avemo.workflows.emodb_descriptors import DEFAULT_FEATURES

    p.add_argument("--root", default=str(DEFAULT_ROOT), help="EmoDB folder (wav/ + labels.csv)")
    p.add_argument("-o", "--out", default=None, help="results folder (default: runs/emodb_nested_<folds>)")
    p.add_argument("--features", default=str(DEFAULT_FEATURES),
                   help="feature cache of workflows.emodb_descriptors (extracted there)")
    p.add_argument("--folds", type=int, default=4, help="speaker folds (0 = leave one speaker out)")
    p.add_argument("--seeds", type=int, default=3, help="outer training seeds (0..N-1)")
    p.add_argument("--no-ablation", action="store_true", help="score only the nested choice on the outer folds")
    p.add_argument("--deploy", action="store_true", help="only the inner choice over all speakers")


def run(a: argparse.Namespace) -> int:
    if not Path(a.root).exists():
        raise UsageError(f"EmoDB not found at {a.root} (see ../shared/data/README.md; --root PATH)")
    missing = [fs for fs in STREAMS.values() if not (Path(a.features) / f"{fs}.h5").exists()]
    if missing:
        raise UsageError(f"--features {a.features} lacks {missing}: run "
                         "`python -m avemo.workflows.emodb_descriptors` first (it extracts them)")
    if a.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {a.seeds}")
    out = Path(a.out or f"runs/emodb_nested_{'loso' if a.folds == 0 else a.folds}")
    if a.deploy:
        best, tab = deploy_choice(Path(a.root), out, Path(a.features))
        print(tab.to_string(index=False))
        print(f"deploy: {variant_name(*best)}")
        return 0
    res = run_nested(Path(a.root), out, Path(a.features), a.folds, a.seeds, not a.no_ablation)
    print(res["markdown"])
    print(f"outputs: {out} ({res['wall_s']:.0f}s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from avemo.workflows.entry import module_main

    return module_main("emodb_nested", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
