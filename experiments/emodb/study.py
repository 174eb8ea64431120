"""What every EmoDB study shares, all through avemo's public API: the manifest (the ``emodb``
data adapter's speaker folds), stage-one features (``avemo.extract.runner.run_features``), a grid
YAML run on the manifest's folds (``avemo.workflows.ablation.run_grid``, whose runs are
``avemo.fusion.train.train_from_config``), one row per run with its speakers checked disjoint,
seed ensembles from the runs' own predictions, and the summary table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from avemo import settings
from avemo.workflows.ablation import run_grid

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GRIDS = HERE / "grids"
#: EmoDB folder (wav/ + labels.csv): ``AVEMO_EMODB``, else ``../shared/data/emodb-8spk`` from the
#: working directory (the repository root under ``make emodb``).
DEFAULT_ROOT = settings.current().emodb


def packaged_grid(name: str) -> Path:
    """A grid shipped with avemo (``workflows/grids``), wherever the package is installed."""
    import avemo.workflows

    return Path(avemo.workflows.__file__).resolve().parent / "grids" / f"{name}.yaml"


def build_manifest(
    root: Path, folds: int, speakers: Sequence[str] | None = None, limit: int | None = None
) -> pd.DataFrame:
    """EmoDB manifest from the data adapter (``folds`` speaker folds; 0 = leave one speaker out);
    ``speakers`` / ``limit`` (clips per speaker, taken round-robin over emotions so a subset keeps
    every class) make quick subsets."""
    from avemo.data.adapters import build_manifest as adapter_manifest

    df = adapter_manifest("emodb", root, folds=folds)
    if limit:
        df = df.sort_values("clip_id")
        df = df.assign(_turn=df.groupby(["subject", "label"]).cumcount())
        df = (
            df.sort_values(["_turn", "label", "clip_id"])
            .groupby("subject", sort=True)
            .head(int(limit))
            .sort_values("clip_id")
            .drop(columns="_turn")
            .reset_index(drop=True)
        )
    if speakers:
        keep = {str(s).zfill(2) for s in speakers}
        df = df[df["subject"].astype(str).isin(keep)].reset_index(drop=True)
        subs = sorted(df["subject"].astype(str).unique())
        k = folds or len(subs)
        df["fold"] = [subs.index(s) * k // len(subs) for s in df["subject"].astype(str)]
    df["split"] = "train"
    return df


def loso(df: pd.DataFrame) -> pd.DataFrame:
    """The same clips with one fold per speaker (leave one speaker out)."""
    subs = sorted(df["subject"].astype(str).unique())
    return df.assign(fold=[subs.index(s) for s in df["subject"].astype(str)])


def folds_desc(df: pd.DataFrame) -> str:
    spk = (
        df.groupby("fold")["subject"].unique().map(lambda s: "+".join(sorted(map(str, s)))).tolist()
    )
    return f"{len(spk)} speaker folds ({', '.join(spk)})"


def save(df: pd.DataFrame, path: Path) -> Path:
    from avemo.data.manifest import save_manifest

    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(save_manifest(df, path))


def extract(manifest: Path, sets: Iterable[str], features: Path, device: str = "cpu") -> None:
    """Stage one: the cached feature sets (a rerun reuses finished files)."""
    from avemo.extract.runner import run_features

    run_features(manifest, sorted(set(sets)), features, device=device, progress=False)


def grid_sets(spec: dict[str, Any], methods: Iterable[str]) -> set[str]:
    """The feature-set names the chosen ``method`` bundles read (base config's when a bundle
    names none)."""
    common = overrides_of(spec).get("data.features")
    if common is None:  # the base resolved (it may itself have a base)
        from avemo.fusion.config import load_config

        common = load_config(spec["base"], check_args=False).data.features
    out = set()
    for m in methods:
        feats = spec["axes"]["method"][m].get("data.features", common)
        out |= {Path(p).stem for p in feats.values() if p}
    return out


def overrides_of(spec: dict[str, Any]) -> dict[str, Any]:
    """A grid's ``overrides`` (mapping or ``key=value`` list) as a mapping."""
    from avemo.fusion.config import parse_override

    over = spec.get("overrides") or {}
    return dict(over) if isinstance(over, dict) else dict(parse_override(o) for o in over)


def load_spec(grid: Path) -> dict[str, Any]:
    """A grid YAML as a dict, its base config path made absolute (relative to the grid file)."""
    spec = yaml.safe_load(Path(grid).read_text())
    spec["base"] = str((Path(grid).parent / spec["base"]).resolve())
    return spec


def run_study_grid(
    spec: dict[str, Any],
    out: Path,
    manifest: Path,
    features: Path,
    k: int,
    *,
    classes: Sequence[str],
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    quiet: bool = True,
) -> pd.DataFrame:
    """The grid on this manifest's ``k`` speaker folds (``cv: manifest``) with feature sets from
    ``features``; ``methods`` / ``seeds`` narrow or replace those axes. One row per run."""
    spec = json.loads(json.dumps(spec))  # a copy
    axes = spec["axes"]
    if methods is not None:
        axes["method"] = {m: axes["method"][m] for m in methods}
    if seeds is not None:
        axes.pop("seed", None)
        if list(seeds) != [0]:  # no seed axis for seed 0 alone: the base config's seed
            axes["seed"] = list(seeds)
    spec["cv"] = {**(spec.get("cv") or {}), "method": "manifest", "k": int(k), "val": "test"}
    spec["overrides"] = [
        *(f"{key}={json.dumps(v)}" for key, v in overrides_of(spec).items()),
        f"data.manifest={Path(manifest).resolve()}",
        f"data.features_dir={Path(features).resolve()}",
        f"data.classes={json.dumps(list(classes))}",
        *overrides,
    ]
    spec.pop("out_dir", None)
    res = run_grid(spec, out_dir=out, quiet=quiet, report=False)
    return run_rows(res["table"])


def run_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a finished grid (test accuracy / UAR, its speakers); a cell that did not
    finish, or whose train and test speakers overlap (its own ``splits.json``), stops the study."""
    rows = []
    for _, r in table.iterrows():
        if r.get("status") != "done":
            raise RuntimeError(f"EmoDB cell {r['cell_id']} did not finish: {r.get('error')}")
        sp = json.loads((Path(r["run_dir"]) / "splits.json").read_text())
        tr, te = set(map(str, sp["subjects"]["train"])), set(map(str, sp["subjects"]["test"]))
        if tr & te:
            raise RuntimeError(f"{r['cell_id']}: speakers {sorted(tr & te)} in train and test")
        seed = r.get("seed")
        rows.append(
            {
                "method": str(r["method"]),
                "fold": int(r["fold"]),
                "seed": 0 if seed is None or pd.isna(seed) else int(seed),
                "accuracy": float(r["test/accuracy"]),
                "uar": float(r["test/uar"]),
                "test_speakers": " ".join(sorted(te)),
                "train_speakers": " ".join(sorted(tr)),
                "run_dir": str(r["run_dir"]),
            }
        )
    return pd.DataFrame(rows)


def clip_probabilities(run_dir: str | Path) -> pd.DataFrame:
    """A run's test-clip class probabilities (``p_<class>`` columns) and labels, by clip id."""
    pr = pd.read_csv(Path(run_dir) / "predictions.csv")
    return pr[pr["partition"] == "test"].set_index("clip_id").sort_index()


def with_ensembles(per_run: pd.DataFrame, methods: Iterable[str] | None = None) -> pd.DataFrame:
    """Adds a ``<method>_ens<n>`` row per fold (``n`` seeds' probabilities averaged per clip) for
    every method with more than one seed per fold."""
    ens = []
    pick = per_run if methods is None else per_run[per_run["method"].isin(list(methods))]
    for (m, f), g in pick.groupby(["method", "fold"], sort=True):
        if len(g) > 1:
            sc = ensemble_scores(g["run_dir"].tolist())
            ens.append(
                {
                    "method": f"{m}_ens{len(g)}",
                    "fold": int(f),
                    "seed": -1,
                    **sc,
                    "test_speakers": g["test_speakers"].iloc[0],
                    "train_speakers": g["train_speakers"].iloc[0],
                    "run_dir": "",
                }
            )
    return pd.concat([per_run, pd.DataFrame(ens)], ignore_index=True) if ens else per_run


def ensemble_scores(run_dirs: Sequence[str | Path]) -> dict[str, float]:
    """Accuracy / UAR of the seeds' test-clip probabilities averaged per clip (the runs' own
    ``predictions.csv``; every seed must have predicted the same clips)."""
    from experiments.emodb.baseline import scores

    probs, labels = [], None
    for d in run_dirs:
        pr = clip_probabilities(d)
        if labels is not None and not pr.index.equals(labels.index):
            raise RuntimeError(f"{d}: test clips differ between seeds")
        labels = pr["label"].astype(str)
        probs.append(pr[[c for c in pr.columns if c.startswith("p_")]])
    mean = sum(p.to_numpy(np.float64) for p in probs) / len(probs)
    classes = np.array([c.removeprefix("p_") for c in probs[0].columns])
    return scores(labels.to_numpy(), classes[mean.argmax(1)])


# ----------------------------------------------------------------------------- summary


def ens_base(method: str) -> tuple[str, int] | None:
    """``<method>_ens<n>`` -> (method, n); None for other rows."""
    base, sep, n = method.rpartition("_ens")
    return (base, int(n)) if sep and n.isdigit() else None


def describe(method: str, seeds: int, labels: dict[str, str]) -> str:
    ens = ens_base(method)
    if ens:
        return f"{labels.get(ens[0], ens[0])} — **ENSEMBLE of {ens[1]} seeds** (test-clip probabilities averaged)"
    what = labels.get(method, method)
    return f"{what} — mean of {seeds} seeds per fold" if seeds > 1 else what


def paired_gap(per_fold: pd.DataFrame, a: str, b: str) -> tuple[float, float, int]:
    """UAR of ``a`` minus ``b`` on the same folds (seed-averaged per fold): mean, std over folds,
    number of folds ``a`` wins."""
    f = per_fold.groupby(["method", "fold"])["uar"].mean().unstack("method")
    d = (f[a] - f[b]).dropna()
    return float(d.mean()), float(d.std(ddof=1)), int((d > 0).sum())


def summarise(
    per_fold: pd.DataFrame, labels: dict[str, str] | None = None, baselines: Sequence[str] = ()
) -> pd.DataFrame:
    """Per method: mean ± std over folds of the per-fold seed-averaged scores, the mean std
    between seeds within a fold, and per baseline the paired per-fold UAR gap to it
    (``gap_<b>``: mean, std, folds won)."""
    rows = []
    have = set(per_fold["method"])
    for m, g in per_fold.groupby("method", sort=False):
        ens = ens_base(str(m))
        seeds = ens[1] if ens else int(g.groupby("fold").size().max())
        f = g.groupby("fold")[["accuracy", "uar"]].mean()
        seed_std = g.groupby("fold")["uar"].std(ddof=1).mean() if seeds > 1 and not ens else np.nan
        r = {
            "method": m,
            "what": describe(str(m), seeds, labels or {}),
            "folds": len(f),
            "seeds": seeds,
            "accuracy_mean": f["accuracy"].mean(),
            "accuracy_std": f["accuracy"].std(ddof=1),
            "uar_mean": f["uar"].mean(),
            "uar_std": f["uar"].std(ddof=1),
            "seed_std_uar": seed_std,
        }
        for b in baselines:
            r[f"gap_{b}"] = paired_gap(per_fold, str(m), b) if b in have and m != b else None
        rows.append(r)
    return pd.DataFrame(rows).sort_values("uar_mean", ascending=False).reset_index(drop=True)


def markdown_table(
    s: pd.DataFrame, baselines: Sequence[str] = (), first: Sequence[str] = ()
) -> list[str]:
    """``first``: leading columns taken from ``s`` as they are (e.g. test bed, protocol)."""
    gaps = [b for b in baselines if f"gap_{b}" in s]
    head = [
        "method",
        "seeds",
        "folds",
        "accuracy",
        "UAR",
        *(f"gap vs {b} (points, folds won)" for b in gaps),
    ]
    lines = ["| " + " | ".join([*first, *head]) + " |", "|---" * (len(first) + len(head)) + "|"]
    for _, r in s.iterrows():
        cells = [str(r[c]) for c in first]
        cells += [
            str(r["what"]),
            str(int(r["seeds"])),
            str(int(r["folds"])),
            f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}",
            f"{r['uar_mean']:.3f} ± {r['uar_std']:.3f}",
        ]
        for b in gaps:
            g = r[f"gap_{b}"]
            cells.append(
                ""
                if g is None or (isinstance(g, float) and np.isnan(g))
                else f"{g[0] * 100:+.1f} ± {g[1] * 100:.1f} ({g[2]}/{int(r['folds'])})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_results(path: Path, title: str, body: str, command: str) -> Path:
    """The study's table as a Markdown results file (``benchmarks/results/<date>-<topic>.md``)."""
    from avemo.bench.table import machine

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# {title}\n\n{body.rstrip()}\n\nReproduce: `{command}`\n\nMachine: {machine()}\n"
    )
    return path
