"""Run plots (matplotlib Agg): learning curves, confusion matrix, predicted-vs-true traces."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: Sequence[Mapping[str, Any]], monitor: str, path: Path) -> Path:
    plt = pyplot()
    h = pd.DataFrame(list(history))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for col in ("train/loss", "val/loss"):
        if col in h:
            a1.plot(h["epoch"], h[col], marker=".", label=col)
    a1.set_xlabel("epoch")
    a1.set_title("loss")
    a1.legend()
    if monitor in h:
        a2.plot(h["epoch"], h[monitor], marker=".", color="C2")
    a2.set_xlabel("epoch")
    a2.set_title(monitor)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion(cm: np.ndarray, classes: Sequence[str], title: str, path: Path) -> Path:
    """Counts in the cells, colour by row-normalised recall (so rare classes stay readable)."""
    plt = pyplot()
    cm = np.asarray(cm)
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticklabels(classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title[:60], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def traces(table: pd.DataFrame, targets: Sequence[str], path: Path, n_clips: int = 3) -> Path:
    plt = pyplot()
    clips = list(dict.fromkeys(table["clip_id"]))[:n_clips]
    fig, axes = plt.subplots(len(clips), len(targets), figsize=(4.5 * len(targets), 2.4 * len(clips)),
                             squeeze=False)
    for r, c in enumerate(clips):
        sub = table[table["clip_id"] == c]
        for j, t in enumerate(targets):
            ax = axes[r][j]
            ax.plot(sub["time"], sub[f"{t}_true"], label="true")
            ax.plot(sub["time"], sub[f"{t}_pred"], label="predicted")
            ax.set_title(f"{c} {t}", fontsize=8)
            ax.set_ylim(-1.05, 1.05)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_run(run_dir: Path, history: Sequence[Mapping[str, Any]], task: Any, table: pd.DataFrame,
             extra: Mapping[str, Any], monitor: str) -> list[Path]:
    """Learning curves, then the task's own plots (confusion matrices, traces, scatter)."""
    out = Path(run_dir) / "plots"
    out.mkdir(exist_ok=True)
    made = []
    if history:
        made.append(learning_curves(history, monitor, out / "learning_curves.png"))
    return made + list(task.plot(out, table, extra))


def scatter(table: pd.DataFrame, targets: Sequence[str], path: Path) -> Path:
    """Predicted against true value per clip, one panel per target (clip-level regression)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets), 3.4), squeeze=False)
    for ax, t in zip(axes[0], targets, strict=True):
        ax.scatter(table[f"{t}_true"], table[f"{t}_pred"], s=8, alpha=0.7)
        lo = float(min(table[f"{t}_true"].min(), table[f"{t}_pred"].min()))
        hi = float(max(table[f"{t}_true"].max(), table[f"{t}_pred"].max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8)
        ax.set_xlabel(f"{t} true")
        ax.set_ylabel(f"{t} predicted")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
