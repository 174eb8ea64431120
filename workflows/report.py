"""Grid reports: Markdown + PNG plots from the results table and the run folders.

What a researcher looks at after an ablation: one bar chart per metric (mean +- std over seeds
and folds per config), the test predictions of the best configs as their task draws them
(``Task.report_figures``: a summed confusion matrix, a scatter, traces; the task is read from
each run's folder, never guessed from columns), the score of every fold, and
the temporal attention weights of a few example clips (does the model look at the frames where
the emotion shows?). Everything is recomputed from files on disk, so a report can be redrawn
for a finished grid without training anything (``python -m avemo.workflows.report OUT``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from avemo.errors import UsageError, UserError
from avemo.fusion.plots import plot_attention, pyplot
from avemo.workflows.entry import module_main

LOWER_IS_BETTER = re.compile(r"(loss|rmse|mse|mae|error|wall_s)", re.I)


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")[:80] or "x"


def _metrics(agg: pd.DataFrame) -> list[str]:
    return [c[: -len("_mean")] for c in agg.columns if c.endswith("_mean")]


def primary_metric(metrics: Sequence[str], preferred: str | None = None) -> str | None:
    """The metric ranking configs: the preferred one, else a test/val accuracy/UAR/CCC."""
    if preferred and preferred in metrics:
        return preferred
    for pat in (
        "test.*uar",
        "test.*acc",
        "test.*ccc",
        "val.*uar",
        "val.*acc",
        "val.*ccc",
        "uar",
        "acc",
        "ccc",
    ):
        hits = [m for m in metrics if re.search(pat, m, re.I)]
        if hits:
            return sorted(hits)[0]
    rest = [m for m in metrics if not LOWER_IS_BETTER.search(m)]
    return rest[0] if rest else (metrics[0] if metrics else None)


def bar_chart(agg: pd.DataFrame, metric: str, path: Path) -> Path:
    plt = pyplot()
    labels = agg["config_id"].astype(str).tolist()
    mean, std = (
        agg[f"{metric}_mean"].to_numpy(float),
        agg[f"{metric}_std"].fillna(0).to_numpy(float),
    )
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(labels) + 2), 4.2))
    ax.bar(range(len(labels)), mean, yerr=std, capsize=3, color="#4c72b0", ecolor="#333333")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(
        [lab.replace("__", "\n") for lab in labels], rotation=60, ha="right", fontsize=7
    )
    ax.set_ylabel(metric)
    n = sorted(set(agg["n"].tolist())) if "n" in agg else []
    runs = "?" if not n else (str(n[0]) if len(n) == 1 else f"{n[0]}-{n[-1]}")
    ax.set_title(f"{metric} (mean ± std over {runs} runs per config)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fold_chart(table: pd.DataFrame, metric: str, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    done = table[table["status"] == "done"]
    for cid, grp in done.groupby("config_id", sort=False):
        g = grp.copy()
        g["_fold"] = pd.to_numeric(g["fold"], errors="coerce")
        g = g.sort_values("_fold")
        ax.plot(g["_fold"], g[metric], marker="o", label=str(cid)[:40])
    ax.set_xlabel("fold")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per fold")
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- run folder readers


def report_figures(run_dirs: Sequence[Path], title: str, stem: Path) -> list[Path]:
    """The figures the runs' task draws of their test predictions (``Task.report_figures``);
    the task comes from the first run folder's config and data report (``fusion.run.read_task``);
    [] when no folder can tell it."""
    from avemo.fusion.run import read_task

    for d in run_dirs:
        if (d / "config.yaml").is_file():
            try:
                task = read_task(d)[2]
            except UserError:  # not a finished run folder: the next one may tell
                continue
            return task.report_figures(run_dirs, title, stem)
    return []


def attention_from_run(
    run_dir: Path, n_clips: int = 3, feature_cache: dict | None = None
) -> dict[str, dict[str, Any]]:
    """``{clip_id: fusion.predict.clip_attention entry}`` for the first ``n_clips`` test clips
    (validation clips where the run has no test partition): each modality's weights with its
    rows' own times in seconds and mask, the arguments of ``fusion.plots.plot_attention``.

    Rebuilds the run from its folder (resolved ``config.yaml`` + the checkpoint its final
    metrics came from, a state dict) and runs the model on one batch; models without temporal attention, and frame
    tasks, give ``{}``.
    """
    import torch

    from avemo.fusion.predict import clip_attention
    from avemo.fusion.run import Run

    if not (run_dir / "config.yaml").exists() or not any((run_dir / "checkpoints").glob("*.pt")):
        return {}
    run = Run.from_dir(run_dir, None, feature_cache=feature_cache)
    dm, model = run.dm, run.model
    part = "test" if len(dm.part_seqs["test"]) else "val"
    batch = next(iter(dm.batches(part, batch_size=n_clips)))
    with torch.no_grad():
        model({k: v for k, v in batch.items() if k in dm.modalities or k[:-5] in dm.modalities})
    return clip_attention(run, dm, batch)


def attention_chart(entry: Mapping[str, Any], title: str, path: Path) -> Path:
    """One clip's attention over time in seconds, each modality at its own rate, padding and
    masked rows not drawn (``fusion.plots.plot_attention``)."""
    return plot_attention(entry["attention"], entry["timing"], path, entry["strides"], title)


# ----------------------------------------------------------------------------- the report


def _md_table(df: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [floatfmt.format(v) if isinstance(v, float) else str(v) for v in r.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_std_table(agg: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    out = pd.DataFrame({"config": agg["config_id"], "runs": agg["n"]})
    for m in metrics:
        out[m] = [
            f"{a:.4f} ± {b:.4f}"
            for a, b in zip(agg[f"{m}_mean"], agg[f"{m}_std"].fillna(0), strict=True)
        ]
    return out


def write_report(
    out_dir: str | os.PathLike[str],
    table: pd.DataFrame | None = None,
    agg: pd.DataFrame | None = None,
    grid: Any = None,
    metrics: Sequence[str] | None = None,
    primary: str | None = None,
    top: int = 2,
    examples: int = 3,
    html: bool = False,
    feature_cache: dict | None = None,
) -> Path:
    """``report.md`` + ``plots/*.png`` for a finished (or partly finished) grid; ``table`` /
    ``agg``: the grid's results and aggregate (None: the ``results.csv`` / ``aggregate.csv`` it
    wrote); ``feature_cache``: the grid's, so the attention plots re-read no feature file."""
    out = Path(out_dir)
    if table is None:  # axis labels are strings (a seed "0" is a label, not a metric)
        import yaml

        axes = (
            list((yaml.safe_load((out / "grid.yaml").read_text()) or {}).get("axes", {}))
            if (out / "grid.yaml").exists()
            else ["fold", "seed"]
        )
        table = pd.read_csv(out / "results.csv", dtype={a: str for a in axes})
    if agg is None:  # the aggregate the grid wrote beside results.csv (the same moment)
        if not (out / "aggregate.csv").is_file():
            raise UsageError(
                f"{out} has no aggregate.csv (`avemo ablate` writes it with results.csv): "
                "rerun the grid's command, it resumes"
            )
        agg = pd.read_csv(out / "aggregate.csv", dtype={"config_id": str})
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    all_metrics = _metrics(agg)
    shown = [m for m in (metrics or all_metrics) if m in all_metrics and m != "wall_s"]
    prim = primary_metric(shown or all_metrics, primary)
    name = getattr(grid, "name", None)
    if name is None and (out / "grid.yaml").exists():
        import yaml

        name = (yaml.safe_load((out / "grid.yaml").read_text()) or {}).get("name")
    name = name or out.name
    md = [f"# Ablation report: {name}", ""]
    counts = table["status"].value_counts().to_dict() if "status" in table else {}
    md += [f"{len(table)} cells: " + ", ".join(f"{v} {k}" for k, v in counts.items()), ""]
    if agg.empty or not shown or prim is None:  # prim is None only when nothing is shown
        md += ["No finished runs with numeric metrics yet.", ""]
    else:
        asc = bool(LOWER_IS_BETTER.search(prim))
        ranked = agg.sort_values(f"{prim}_mean", ascending=asc)
        md += [
            f"## Configs (ranked by {prim}; mean ± std over seeds/folds)",
            "",
            _md_table(_mean_std_table(ranked, shown)),
            "",
        ]
        md += ["## Metrics", ""]
        for m in shown:
            p = bar_chart(ranked, m, plots / f"bar_{_safe(m)}.png")
            md += [f"![{m}](plots/{p.name})", ""]
        md += _predictions_section(table, ranked, top, plots)
        if "fold" in table.columns and table["fold"].notna().any():
            md += ["## Per-fold scores", ""]
            done = table[table["status"] == "done"]
            pivot = done.pivot_table(index="config_id", columns="fold", values=prim, aggfunc="mean")
            md += [_md_table(pivot.reset_index()), ""]
            p = fold_chart(table, prim, plots / f"folds_{_safe(prim)}.png")
            md += [f"![per fold](plots/{p.name})", ""]
        md += _attention_section(table, ranked, top, examples, plots, feature_cache)
    failed = (
        table[table["status"].isin(["failed", "missing_features"])]
        if "status" in table
        else table[:0]
    )
    if len(failed):
        md += [
            "## Cells not finished",
            "",
            _md_table(failed[["cell_id", "status", "error"]].fillna("")),
            "",
        ]
    md += [
        "## Files",
        "",
        "* `results.csv` / `results.parquet`: one row per run",
        "* `aggregate.csv` / `aggregate.parquet`: mean and std per config",
        "* `runs/<cell>/`: each run's folder",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(md))
    if html:
        _write_html(path)
    return path


def _best_runs(table: pd.DataFrame, ranked: pd.DataFrame, top: int) -> list[tuple[str, list[Path]]]:
    done = table[table["status"] == "done"]
    out = []
    for cid in ranked["config_id"].head(top):
        dirs = [Path(d) for d in done.loc[done["config_id"] == cid, "run_dir"].dropna()]
        out.append((str(cid), dirs))
    return out


def _predictions_section(
    table: pd.DataFrame, ranked: pd.DataFrame, top: int, plots: Path
) -> list[str]:
    md: list[str] = []
    for cid, dirs in _best_runs(table, ranked, top):
        for p in report_figures(dirs, cid, plots / _safe(cid)):
            md += [f"![{cid}](plots/{p.name})", ""]
    return (["## Test predictions of the best configs", "", *md]) if md else []


def _attention_section(
    table: pd.DataFrame,
    ranked: pd.DataFrame,
    top: int,
    examples: int,
    plots: Path,
    feature_cache: dict | None = None,
) -> list[str]:
    md: list[str] = []
    cache = {} if feature_cache is None else feature_cache  # the runs share their feature files
    for cid, dirs in _best_runs(table, ranked, top):
        for d in dirs[:1]:
            try:
                att = attention_from_run(d, examples, cache)
            except Exception as e:  # noqa: BLE001 - a model without attention is not an error
                print(f"[report] attention of {d.name} unavailable: {e}", file=sys.stderr)
                att = {}
            for clip, entry in att.items():
                p = attention_chart(
                    entry, f"{cid}: {clip}", plots / f"attention_{_safe(cid)}_{_safe(clip)}.png"
                )
                md += [f"![attention {cid} {clip}](plots/{p.name})", ""]
    return (["## Attention weights over time (example test clips)", "", *md]) if md else []


def _write_html(md_path: Path) -> Path:
    """Minimal HTML next to the Markdown (images inline by reference), no extra dependency."""
    import html

    lines = []
    for line in md_path.read_text().splitlines():
        m = re.match(r"!\[(.*)\]\((.*)\)", line)
        if m:
            lines.append(
                f'<p><img alt="{html.escape(m.group(1))}" src="{html.escape(m.group(2))}"></p>'
            )
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            lines.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            if set(line) <= set("|-"):
                continue
            cells = "".join(
                f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|")
            )
            lines.append(f"<table><tr>{cells}</tr></table>")
        elif line.strip():
            lines.append(f"<p>{html.escape(line)}</p>")
    out = md_path.with_suffix(".html")
    out.write_text("<!doctype html><meta charset='utf-8'><body>\n" + "\n".join(lines) + "\n</body>")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``avemo report`` (also ``python -m avemo.workflows.report``)."""
    p.add_argument(
        "out_dir", metavar="GRID_OUT", help="a grid results folder (from `avemo ablate`)"
    )
    p.add_argument("--html", action="store_true", help="also write report.html next to report.md")


def run(a: argparse.Namespace) -> int:
    out = Path(a.out_dir)
    if not (out / "results.csv").is_file():
        raise UsageError(
            f"{out} is not a grid results folder (no results.csv): "
            "give the -o folder of `avemo ablate`"
        )
    print(write_report(out, html=a.html))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m avemo.workflows.report``: the options and exit codes of ``avemo report``."""
    return module_main("report", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
