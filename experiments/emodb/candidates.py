"""Issue 23.3 candidates on the EmoDB test beds: ``python experiments/emodb/candidates.py``.

Runs ``grids/candidates.yaml`` (the packaged recipe with several seeds and the same head on each
stream alone) on one bed and protocol per call, scores every candidate of the grid's
``definitions.ensembles`` (the named runs' test-clip probabilities averaged per clip) and
ComParE-2016 + linear SVM plain / per-speaker normalised on the SAME folds, and writes
``per_fold.csv`` under ``-o``. ``--summary DIR...`` pools finished calls into the paired table.
Beds as ``run.py testbeds``: ``balanced`` or ``dK`` (each speaker keeps 1-2 emotions, draw K).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: the repository root holds the experiments package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.emodb import baseline as bl  # noqa: E402
from experiments.emodb import study as st  # noqa: E402
from experiments.emodb.run import DEFAULT_FEATURES, unbalanced  # noqa: E402

GRID = st.GRIDS / "candidates.yaml"
GAPS = ["compare_svm", "compare_svm_spk"]


def score(bed: str, protocol: str, a: argparse.Namespace) -> pd.DataFrame:
    """Every run the candidates need, the candidates and both SVM rows on one bed / protocol."""
    spec = st.load_spec(st.GRIDS / a.grid)
    ens: dict[str, dict[str, list[int]]] = spec["definitions"]["ensembles"]
    if a.methods:  # a subset of the grid's candidates (e.g. the cheap ones on a long protocol)
        unknown = sorted(set(a.methods) - set(ens))
        if unknown:
            raise SystemExit(f"--methods: {unknown} not among the grid's candidates {sorted(ens)}")
        ens = {k: v for k, v in ens.items() if k in a.methods}
    need: dict[str, set[int]] = {}
    for members in ens.values():
        for m, seeds in members.items():
            need.setdefault(m, set()).update(seeds)
    df = st.build_manifest(Path(a.root), 4)
    if bed != "balanced":
        df = unbalanced(df, int(bed.removeprefix("d")))
    d = st.loso(df) if protocol == "loso" else df
    out = Path(a.out) / bed / protocol
    manifest = st.save(d, out / "manifest.csv")
    features = Path(a.features)
    runs = [] if not a.finished else [finished_runs(out)]
    for seeds in (
        [] if a.finished else sorted({tuple(sorted(s)) for s in need.values()})
    ):  # one grid per seed set
        methods = [m for m, s in need.items() if tuple(sorted(s)) == seeds]
        runs.append(
            st.run_study_grid(
                spec,
                out / ("grid_" + "-".join(map(str, seeds))),
                manifest,
                features,
                int(d["fold"].max()) + 1,
                classes=sorted(d["label"].unique()),
                methods=methods,
                seeds=list(seeds),
                quiet=True,
            )
        )
    r = pd.concat(runs, ignore_index=True)
    rows = [r[r["method"] == "recipe"].drop(columns="run_dir")]
    for name, members in ens.items():
        for f, g in r.groupby("fold"):
            pick = g[[s in members.get(m, []) for m, s in zip(g["method"], g["seed"], strict=True)]]
            if pick.empty:  # a stopped grid (--finished) may not have reached this fold
                continue
            rows.append(
                pd.DataFrame(
                    [
                        {
                            "method": name,
                            "fold": int(f),
                            "seed": -1,
                            "members": len(pick),
                            **st.ensemble_scores(pick["run_dir"].tolist()),
                        }
                    ]
                )
            )
    func = bl.opensmile_functionals(
        st.build_manifest(Path(a.root), 4),
        "compare",
        features.parent / "opensmile" / "compare.parquet",
    )
    x = func.loc[d["clip_id"]].to_numpy(np.float64)
    rows += [pd.DataFrame(bl.svm_rows(d, x, "compare", sn)) for sn in (False, True)]
    per_fold = pd.concat(rows, ignore_index=True).assign(bed=bed, protocol=protocol)
    per_fold.to_csv(out / "per_fold.csv", index=False)
    r.drop(columns="run_dir").to_csv(out / "runs.csv", index=False)
    return per_fold


def finished_runs(out: Path) -> pd.DataFrame:
    """The runs already finished under ``out`` (their ``DONE.json``), none trained: the rows
    ``run_study_grid`` would give, for scoring a bed whose grid was stopped early."""
    table = []
    for done in sorted(out.glob("grid_*/runs/*/DONE.json")):
        rec = json.loads(done.read_text())
        lab = rec["labels"]
        table.append(
            {
                "cell_id": rec["cell_id"],
                "status": rec["status"],
                "method": lab["method"],
                "seed": int(lab.get("seed", 0)),
                "fold": int(lab["fold"]),
                "test/accuracy": rec["metrics"]["test/accuracy"],
                "test/uar": rec["metrics"]["test/uar"],
                "run_dir": str(done.parent),
            }
        )
    return st.run_rows(pd.DataFrame(table))


def summary(dirs: list[str], grid: str = GRID.name) -> str:
    """Paired table over finished ``per_fold.csv`` files: per bed group and protocol."""
    pf = pd.concat([pd.read_csv(p) for d in dirs for p in Path(d).rglob("per_fold.csv")])
    spec = st.load_spec(st.GRIDS / grid)
    labels = {**bl.LABELS, **spec["labels"]["method"]}
    parts = []
    grp = np.where(pf["bed"] == "balanced", "balanced", "unbalanced")
    for (g, proto), x in pf.assign(group=grp).groupby(["group", "protocol"], sort=False):
        s = st.summarise(x.assign(fold=x["bed"] + ":" + x["fold"].astype(str)), labels, GAPS)
        beds = "" if g == "balanced" else f" ({', '.join(sorted(x['bed'].unique()))})"
        parts.append(s.assign(bed=g + beds, protocol=proto))
    s = pd.concat(parts, ignore_index=True)
    lines = st.markdown_table(s, GAPS, first=["bed", "protocol"])
    f = pf.groupby(["bed", "protocol", "fold", "method"])["uar"].mean().unstack("method") * 100
    cols = ["compare_svm", "compare_svm_spk", "recipe", *spec["definitions"]["ensembles"]]
    cols = [c for c in cols if c in f.columns]  # a grid without the plain recipe runs
    lines += [
        "",
        "| bed | protocol | fold | " + " | ".join(cols) + " |",
        "|---" * (3 + len(cols)) + "|",
    ]
    for (b, p, fo), row in f.iterrows():
        lines.append(f"| {b} | {p} | {fo} | " + " | ".join(f"{row[c]:.1f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python experiments/emodb/candidates.py", description=__doc__)
    p.add_argument("--root", default=str(st.DEFAULT_ROOT), help="EmoDB folder")
    p.add_argument("--features", default=str(DEFAULT_FEATURES), help="feature cache folder")
    p.add_argument("-o", "--out", default="runs/emodb_candidates", help="output folder")
    p.add_argument("--bed", default="balanced", help="balanced or dK (unbalanced draw K)")
    p.add_argument("--protocol", default="4folds", choices=["4folds", "loso"])
    p.add_argument("--grid", default=GRID.name, help="grid file under experiments/emodb/grids")
    p.add_argument("--summary", nargs="*", help="only pool finished output folders")
    p.add_argument("--methods", nargs="*", help="only these candidates of the grid (default all)")
    p.add_argument(
        "--finished",
        action="store_true",
        help="score the runs already finished under -o (a stopped grid; nothing trained)",
    )
    a = p.parse_args(argv)
    if a.summary:
        print(summary(a.summary, a.grid))
        return 0
    if not (st.GRIDS / a.grid).is_file():
        print(f"candidates.py: error: no grid {a.grid!r} in {st.GRIDS}", file=sys.stderr)
        return 2
    if not Path(a.root).exists():
        print(f"candidates.py: error: EmoDB not found at {a.root}", file=sys.stderr)
        return 2
    if a.bed != "balanced" and not (a.bed.startswith("d") and a.bed[1:].isdigit()):
        print(f"candidates.py: error: --bed {a.bed!r}: use balanced or dK", file=sys.stderr)
        return 2
    pf: Any = score(a.bed, a.protocol, a)
    print(pf.groupby("method")["uar"].mean().round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
