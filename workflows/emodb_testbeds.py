"""EmoDB test beds for the speech recipe (issue 23): balanced speakers and speakers cut down to
one or two emotions, each under 4 speaker folds and leave-one-speaker-out.

``python -m avemo.workflows.emodb_testbeds --draws 5 --seeds 3`` reuses the cached descriptor
feature sets of ``workflows.emodb_descriptors`` (``--features``) and the cached ComParE-2016
functionals (``--functionals``) and scores, on the SAME folds of every test bed:

* ``svm``: ComParE-2016 functionals -> standardise -> linear SVM (balanced, C by inner
  leave-one-speaker-out on the training speakers; ``workflows.emodb_baseline.svm_fold``);
* ``svm_spk``: the same with the functionals z-normalised per speaker over the speaker's own
  clips in the test bed (``fusion.speaker_norm.normalise_groups``);
* ``recipe``: ``workflows/configs/speech_emotion.yaml``'s recipe -- per stream (compare_lld,
  egemaps_lld, pitch_swiftf0, logmel, speech_embedding) masked mean / std / p10 / p50 / p90 per
  clip, the ``descriptors`` head (BatchNorm standardisation, clip ±5, dropout 0.5, linear; AdamW
  1e-3, weight decay 10, cosine, 60 epochs, batch 32, label smoothing 0.1, balanced weights, last
  epoch; trained by ``workflows.emodb_nested.fit_predict``, which mirrors the stage-two model),
  with ``data.speaker_norm: auto``: the mode (off / shrink / speaker, prior 10 clips) chosen per
  outer fold by ``fusion.speaker_norm.choose`` on the outer TRAINING clips only -- the same
  function the datamodule calls; seeds 0..N-1, row = mean of the seeds per fold;
* ``recipe_ens``: the seeds' class probabilities averaged per test clip;
* ablation only (never used to choose): the recipe with the mode fixed (``recipe_off``,
  ``recipe_shrink``, ``recipe_speaker``).

Test beds. ``balanced``: all 411 clips (every speaker acts every emotion). ``unbalanced-dK``
(draw K = 0..N-1, a derived manifest, no new files): each speaker keeps the clips of 1 or 2 of
its emotions (1 or 2 with probability 1/2 each, emotions drawn uniformly, ``numpy`` generator
seeded with K), redrawn until every emotion is kept by at least one speaker. Folds: the corpus's
4 speaker folds (03+08, 09+10, 12+13, 15+16) and leave one speaker out, on every bed. A test
clip whose emotion no training speaker of the fold shows is still scored (it can only be
wrong): ``split.label_coverage: warn`` semantics -- the in-the-wild situation the issue reports;
the per-fold count of such clips is in ``per_fold.csv`` (``unseen_test_clips``).

Protocol and candidates, written down and committed BEFORE any test fold of these beds was
scored (2026-12-06): the candidate for issue 23.1 / 23.4 is ``recipe`` (speaker_norm auto); the
candidate for issue 23.3 (a learned model >= 3 UAR points beyond ``svm_spk`` on both EmoDB
protocols and on the unbalanced beds) is ``recipe_ens`` (3-seed ensemble). Gaps are paired
per-fold UAR differences (mean ± std over folds, folds won); the unbalanced rows pool the folds
of all draws.

Revision (2026-12-06, after scoring ``balanced`` and draws 0-4 with the candidate above): on the
unbalanced beds ``recipe`` (the best mean inner UAR) trailed ``svm`` by 2 points on average, while
``recipe_off`` led it by 2-3: the inner CV picked shrink / speaker on 9 of 60 unbalanced folds by
inner margins of 0.01-0.15 UAR, within the inner folds' noise. Candidate v2, named before any
test fold of draws 5-9 is scored: ``recipe_1se`` -- the same recipe with the one-standard-error
rule (``fusion.speaker_norm.pick(..., "1se")``: the earliest of off, shrink, speaker whose mean
inner UAR is within one standard error of the best's). It is judged on FRESH draws 5-9
(``--first-draw 5 --no-balanced``); on ``balanced`` its choices are reported, knowing that bed
was seen.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avemo.errors import UsageError

MODES = ("off", "shrink", "speaker")
PRIOR = 10.0
WEIGHT_DECAY = 10.0
STATS = ("mean", "std", "p10", "p50", "p90")
PROTOCOLS = {"4folds": 4, "loso": 0}
METHODS = ("svm", "svm_spk", "recipe", "recipe_ens", "recipe_1se", *(f"recipe_{m}" for m in MODES))


def unbalanced(df: pd.DataFrame, draw: int, max_tries: int = 10000) -> pd.DataFrame:
    """The derived manifest of draw ``draw``: each speaker's clips of 1 or 2 of its emotions,
    every emotion kept by at least one speaker (rows and columns of ``df`` otherwise unchanged)."""
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


def load_streams(features: Path) -> dict[str, Any]:
    from avemo.fusion.features import load_features
    from avemo.workflows.emodb_nested import STREAMS

    return {m: load_features(features / f"{fs}.h5") for m, fs in STREAMS.items()}


def head_inputs(arrays: Mapping[str, Any], ids: Sequence[str]) -> np.ndarray:
    """``[n, D]``: the recipe's five statistics of every stream per clip (``descriptor_stats``)."""
    import torch

    from avemo.fusion.models.encoder_descriptors import descriptor_stats

    parts = []
    for a in arrays.values():
        rows = []
        for c in ids:
            lo, hi = a.rows_of(c)
            x = a.values[lo:hi].reshape(1, hi - lo, -1).float()
            rows.append(descriptor_stats(x, a.row_mask[lo:hi][None], STATS)[0])
        parts.append(torch.stack(rows).numpy())
    return np.nan_to_num(np.concatenate(parts, 1)).astype(np.float32)


def _uar(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # predicted classes absent from the test fold
        return float(balanced_accuracy_score(y, pred))


def score_bed(
    bed: str,
    df: pd.DataFrame,
    arrays: Mapping[str, Any],
    func: pd.DataFrame,
    protocol: str,
    seeds: int,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Every method on one test bed and protocol: one row per method x fold (x seed)."""
    from avemo.fusion import speaker_norm as sn
    from avemo.workflows.emodb_baseline import svm_fold
    from avemo.workflows.emodb_nested import fit_predict

    ids = df["clip_id"].astype(str).tolist()
    who = dict(zip(ids, df["subject"].astype(str), strict=True))
    labels = dict(zip(ids, df["label"].astype(str), strict=True))
    groups = df["subject"].astype(str).to_numpy()
    y_str = df["label"].astype(str).to_numpy()
    classes = sorted(set(y_str))
    y = np.array([classes.index(v) for v in y_str])
    if PROTOCOLS[protocol]:
        fold = df["fold"].astype(int).to_numpy()
    else:
        fold = np.array([sorted(set(groups)).index(g) for g in groups])
    x_func = np.nan_to_num(func.loc[ids].to_numpy(np.float64))
    x_func_spk = sn.normalise_groups(x_func, np.ones(len(ids), bool), groups)
    fixed = {m: head_inputs(sn.normalised_arrays(arrays, who, m), ids) for m in ("off", "speaker")}
    rows: list[dict[str, Any]] = []
    for f in sorted(set(fold)):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        assert not set(groups[train]) & set(groups[test]), "speaker in train and test"
        base = {
            "bed": bed,
            "protocol": protocol,
            "fold": int(f),
            "test_speakers": " ".join(sorted(set(groups[test]))),
            "unseen_test_clips": int((~np.isin(y[test], y[train])).sum()),
            "test_clips": len(test),
        }
        for name, xf in (("svm", x_func), ("svm_spk", x_func_spk)):
            pred, c = svm_fold(xf, y_str, groups, train, test)
            rows.append({**base, "method": name, "seed": 0, "uar": _uar(y_str[test], pred), "C": c})
        train_ids = [ids[i] for i in train]
        _, table = sn.choose(arrays, who, labels, train_ids, PRIOR)  # training speakers only
        mode, mode_1se = sn.pick(table, "best"), sn.pick(table, "1se")
        ref = {m: sn.reference_statistics(a, train_ids) for m, a in arrays.items()}
        xs = dict(fixed)
        xs["shrink"] = head_inputs(sn.normalised_arrays(arrays, who, "shrink", PRIOR, ref), ids)
        inner = " ".join(f"{r['mode']}={r['inner_uar']:.3f}" for r in table)
        for m in MODES:
            probs = [
                fit_predict(xs[m], y, train, test, len(classes), [WEIGHT_DECAY], s)[0]
                for s in range(seeds)
            ]
            names = [f"recipe_{m}"] + (["recipe"] if m == mode else [])
            names += ["recipe_1se"] if m == mode_1se else []
            for name in names:
                for s, p in enumerate(probs):
                    rows.append(
                        {
                            **base,
                            "method": name,
                            "seed": s,
                            "uar": _uar(y[test], p.argmax(1)),
                            "mode": m,
                            "mode_1se": mode_1se,
                            "inner": inner,
                        }
                    )
            if m == mode:
                pe = np.mean(probs, 0)
                rows.append(
                    {
                        **base,
                        "method": "recipe_ens",
                        "seed": -1,
                        "uar": _uar(y[test], pe.argmax(1)),
                        "mode": m,
                        "mode_1se": mode_1se,
                        "inner": inner,
                    }
                )
        log(
            f"{bed} {protocol} fold {f}: auto chose {mode} (1se: {mode_1se}; {inner}); "
            + ", ".join(
                f"{r['method']} {r['uar']:.3f}"
                for r in rows
                if r["fold"] == f
                and r["seed"] <= 0
                and r["bed"] == bed
                and r["protocol"] == protocol
            )
        )
    return rows


def fold_table(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged UAR per (bed group, protocol, bed, fold) x method."""
    g = per_fold.assign(group=per_fold["bed"].str.split("-").str[0])
    return g.pivot_table(
        index=["group", "protocol", "bed", "fold"], columns="method", values="uar", aggfunc="mean"
    ).reset_index()


def summary(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Per bed group and protocol: each method's UAR mean ± std over folds (all draws pooled) and
    the paired per-fold gaps of every method to svm and svm_spk (mean ± std, folds won)."""
    ft = fold_table(per_fold)
    out = []
    for (grp, proto), g in ft.groupby(["group", "protocol"], sort=False):
        for m in [c for c in METHODS if c in g]:
            r = {
                "bed": grp,
                "protocol": proto,
                "method": m,
                "folds": len(g),
                "draws": g["bed"].nunique(),
                "uar_mean": g[m].mean(),
                "uar_std": g[m].std(ddof=1),
            }
            for b in ("svm", "svm_spk"):
                d = g[m] - g[b]
                r[f"gap_{b}"], r[f"gap_{b}_std"], r[f"won_{b}"] = (
                    d.mean(),
                    d.std(ddof=1),
                    int((d > 0).sum()),
                )
            out.append(r)
    return pd.DataFrame(out)


def markdown(s: pd.DataFrame, ft: pd.DataFrame, choices: pd.DataFrame, command: str) -> str:
    lines = [
        "| test bed | protocol | method | folds | UAR | gap vs SVM (plain) | gap vs SVM (per-speaker norm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in s.iterrows():
        gaps = [
            (
                ""
                if r["method"] == b
                else f"{r[f'gap_{b}'] * 100:+.1f} ± {r[f'gap_{b}_std'] * 100:.1f} ({r[f'won_{b}']}/{r['folds']})"
            )
            for b in ("svm", "svm_spk")
        ]
        bold = ("recipe", "recipe_ens", "recipe_1se")
        name = f"**{r['method']}**" if r["method"] in bold else r["method"]
        lines.append(
            f"| {r['bed']} ({r['draws']} draw{'s' if r['draws'] > 1 else ''}) | {r['protocol']} | {name} | "
            f"{r['folds']} | {r['uar_mean']:.3f} ± {r['uar_std']:.3f} | {gaps[0]} | {gaps[1]} |"
        )
    lines += [
        "",
        "Per fold (UAR %, seed-averaged; gap = recipe - svm / recipe - svm_spk, points):",
        "",
        "| bed | protocol | fold | svm | svm_spk | recipe | recipe_ens | recipe_1se | gap svm | gap svm_spk "
        "| 1se gap svm | 1se gap svm_spk | auto chose (best / 1se) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in ft.iterrows():
        ch = choices[
            (choices["bed"] == r["bed"])
            & (choices["protocol"] == r["protocol"])
            & (choices["fold"] == r["fold"])
        ].iloc[0]
        lines.append(
            f"| {r['bed']} | {r['protocol']} | {r['fold']} | {r['svm'] * 100:.1f} | {r['svm_spk'] * 100:.1f} | "
            f"{r['recipe'] * 100:.1f} | {r['recipe_ens'] * 100:.1f} | {r['recipe_1se'] * 100:.1f} | "
            f"{(r['recipe'] - r['svm']) * 100:+.1f} | {(r['recipe'] - r['svm_spk']) * 100:+.1f} | "
            f"{(r['recipe_1se'] - r['svm']) * 100:+.1f} | {(r['recipe_1se'] - r['svm_spk']) * 100:+.1f} | "
            f"{ch['mode']} / {ch['mode_1se']} |"
        )
    return "\n".join(lines + ["", f"Reproduce: `{command}`"]) + "\n"


def run_testbeds(
    root: Path,
    features: Path,
    functionals: Path,
    out: Path,
    draws: int = 5,
    seeds: int = 3,
    protocols: Sequence[str] = ("4folds", "loso"),
    balanced: bool = True,
    first_draw: int = 0,
) -> dict[str, Any]:
    """Every bed x protocol; writes per_fold.csv, summary.csv, choices.csv, README_snippet.md."""
    from avemo.workflows.emodb import build_manifest
    from avemo.workflows.emodb_baseline import opensmile_functionals

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    df = build_manifest(root, 4)
    func = opensmile_functionals(df, "ComParE_2016", functionals)
    arrays = load_streams(features)
    beds = ([("balanced", df)] if balanced else []) + [
        (f"unbalanced-d{k}", unbalanced(df, k)) for k in range(first_draw, first_draw + draws)
    ]
    rows = []
    for bed, d in beds:
        d.to_csv(out / f"manifest_{bed}.csv", index=False)
        for proto in protocols:
            rows += score_bed(bed, d, arrays, func, proto, seeds)
            pd.DataFrame(rows).to_csv(out / "per_fold.csv", index=False)  # partial results survive
    per_fold = pd.DataFrame(rows)
    per_fold.to_csv(out / "per_fold.csv", index=False)
    s = summary(per_fold)
    s.to_csv(out / "summary.csv", index=False)
    choices = per_fold[per_fold["method"] == "recipe_ens"][
        ["bed", "protocol", "fold", "mode", "mode_1se", "inner"]
    ]
    choices.to_csv(out / "choices.csv", index=False)
    command = (
        f"python -m avemo.workflows.emodb_testbeds --draws {draws} --first-draw {first_draw} "
        f"--seeds {seeds} {'' if balanced else '--no-balanced '}"
        f"--features {features} --functionals {functionals}"
    )
    md = markdown(s, fold_table(per_fold), choices, command)
    (out / "README_snippet.md").write_text(md)
    return {"per_fold": per_fold, "summary": s, "markdown": md, "wall_s": time.perf_counter() - t0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from avemo.workflows.emodb import DEFAULT_ROOT
    from avemo.workflows.emodb_descriptors import DEFAULT_FEATURES

    p.add_argument("--root", default=str(DEFAULT_ROOT), help="EmoDB folder (wav/ + labels.csv)")
    p.add_argument("-o", "--out", default="runs/emodb_testbeds", help="results folder")
    p.add_argument(
        "--features",
        default=str(DEFAULT_FEATURES),
        help="feature cache of workflows.emodb_descriptors (the five descriptor sets)",
    )
    p.add_argument(
        "--functionals",
        default=None,
        help="ComParE-2016 functionals Parquet (default: FEATURES/../opensmile/compare.parquet)",
    )
    p.add_argument(
        "--draws", type=int, default=5, help="random draws of the unbalanced-speaker bed"
    )
    p.add_argument("--first-draw", type=int, default=0, help="seed of the first draw (K..K+N-1)")
    p.add_argument("--seeds", type=int, default=3, help="recipe training seeds per fold (0..N-1)")
    p.add_argument("--protocols", nargs="*", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    p.add_argument("--no-balanced", action="store_true", help="only the unbalanced beds")


def run(a: argparse.Namespace) -> int:
    from avemo.workflows.emodb_nested import STREAMS

    if not Path(a.root).exists():
        raise UsageError(f"EmoDB not found at {a.root} (see ../shared/data/README.md; --root PATH)")
    missing = [fs for fs in STREAMS.values() if not (Path(a.features) / f"{fs}.h5").exists()]
    if missing:
        raise UsageError(
            f"--features {a.features} lacks {missing}: run "
            "`python -m avemo.workflows.emodb_descriptors` first (it extracts them)"
        )
    if a.seeds < 1 or a.draws < 0:
        raise UsageError(f"--seeds must be >= 1 and --draws >= 0, got {a.seeds} / {a.draws}")
    func = (
        Path(a.functionals)
        if a.functionals
        else Path(a.features).parent / "opensmile" / "compare.parquet"
    )
    res = run_testbeds(
        Path(a.root),
        Path(a.features),
        func,
        Path(a.out),
        a.draws,
        a.seeds,
        a.protocols,
        not a.no_balanced,
        a.first_draw,
    )
    print(res["markdown"])
    print(f"outputs: {a.out} ({res['wall_s']:.0f}s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from avemo.workflows.entry import module_main

    return module_main("emodb_testbeds", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
