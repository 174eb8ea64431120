"""Run plots (matplotlib Agg): learning curves, confusion matrix, predicted-vs-true traces,
temporal attention over time (in seconds, each modality at its own rate)."""

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
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
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
    fig, axes = plt.subplots(
        len(clips), len(targets), figsize=(4.5 * len(targets), 2.4 * len(clips)), squeeze=False
    )
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


def plot_run(
    run_dir: Path,
    history: Sequence[Mapping[str, Any]],
    task: Any,
    table: pd.DataFrame,
    extra: Mapping[str, Any],
    monitor: str,
) -> list[Path]:
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


def _save(fig: Any, path: Path, dpi: int = 100) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def clip_bars(
    names: Sequence[str],
    values: Sequence[Any],
    title: str,
    missing: Any,
    path: Path,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One clip's predicted values (class probabilities, targets) as bars; NaN draws as 0;
    ``missing``: the modalities it was predicted without (named in the title)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(names), [float(v) if v == v and v is not None else 0.0 for v in values], color="C0")
    if ylim is not None:
        ax.set_ylim(*ylim)
        ax.set_ylabel("probability")
    if isinstance(missing, str) and missing:
        title += f" (no {missing})"
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7, rotation=30)
    return _save(fig, path)


def frame_trace(
    rows: pd.DataFrame, clip_id: str, targets: Sequence[str], modalities: Sequence[str], path: Path
) -> Path:
    """One clip's predicted traces over time, each modality's presence (``<m>_present``)
    underneath as a green strip."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(
        2, 1, figsize=(8, 4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for name in targets:
        a1.plot(rows["time"], rows[name], label=name)
    a1.axhline(0, color="0.8", lw=0.8)
    a1.legend(loc="upper right", fontsize=8)
    a1.set_title(f"{clip_id}: predicted {' / '.join(targets)}", fontsize=9)
    mods = [m for m in modalities if f"{m}_present" in rows]
    img = np.array([rows[f"{m}_present"].fillna(False).to_numpy(float) for m in mods])
    t = rows["time"].to_numpy(float)
    if not np.isfinite(t).any():  # nothing usable in this clip: an empty figure says so
        img, t = np.zeros((len(mods), 1)), np.zeros(1)
    ext = (t[0], t[-1], -0.5, len(mods) - 0.5) if len(t) > 1 else None
    a2.imshow(
        img,
        aspect="auto",
        cmap="Greens",
        vmin=0,
        vmax=1,
        extent=ext,
        interpolation="nearest",
        origin="lower",
    )
    a2.set_yticks(range(len(mods)))
    a2.set_yticklabels(mods, fontsize=7)
    a2.set_xlabel("time (s)")
    a2.set_title("present (green) / missing", fontsize=7)
    return _save(fig, path)


# ----------------------------------------------------------------------------- attention over time


def attention_positions(
    row_times: Any, row_mask: Any, n_positions: int, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Seconds and validity of each temporal attention position of one clip.

    ``row_times [T]`` / ``row_mask [T]``: the modality's input rows as the model saw them (the
    feature file's own timestamps, padding and masked rows False). An encoder that pools time
    by ``stride`` (ceil mode, windows from row 0: ``Encoder.time_stride``) gives
    ``ceil(T / stride)`` positions; position j covers rows ``[j*stride, (j+1)*stride)``, so its
    time is the mean time of the valid rows it covers and it is valid when any of them is.
    Raises ``ValueError`` when ``n_positions`` does not fit that (attention that cannot be
    placed in time is refused rather than drawn at guessed times).
    """
    t = np.asarray(row_times, np.float64).reshape(-1)
    m = np.asarray(row_mask, bool).reshape(-1)
    s = int(stride)
    if len(t) != len(m) or s < 1:
        raise ValueError(f"row times ({len(t)}) and mask ({len(m)}) differ, or stride {s} < 1")
    if n_positions != -(-len(t) // s):
        raise ValueError(
            f"{n_positions} attention positions do not cover {len(t)} rows at "
            f"stride {s} (expected {-(-len(t) // s)})"
        )
    pad = n_positions * s - len(t)
    tw = np.concatenate([t, np.zeros(pad)]).reshape(n_positions, s)
    mw = np.concatenate([m, np.zeros(pad, bool)]).reshape(n_positions, s)
    n = mw.sum(1)
    times = np.where(n > 0, (tw * mw).sum(1) / np.maximum(n, 1), np.nan)
    return times, n > 0


def _runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each stretch of consecutive valid positions."""
    edges = np.diff(np.concatenate([[0], valid.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def attention_figure(
    attention: Mapping[str, Any],
    timing: Mapping[str, tuple[Any, Any]],
    strides: Mapping[str, int] | None = None,
    title: str = "",
) -> Any:
    """One clip's temporal attention against time in seconds, one panel per modality (shared
    time axis, each modality at its own rate); the figure, for ``plot_attention`` to save.

    ``attention``: modality -> weights ``[T'_m]`` (``model.attention[m][b]``); ``timing``:
    modality -> ``(row_times [T_m], row_mask [T_m])`` of the same clip; ``strides``: the
    encoder's ``time_stride`` per modality (default 1). Only valid positions are drawn (padding
    and masked rows leave gaps, never zeros): each stretch of consecutive valid positions is one
    line whose ``gid`` is the modality. The dashed line is uniform attention (1 / valid steps).
    """
    plt = pyplot()
    names = [m for m in attention if m in timing]
    if not names:
        raise ValueError(
            f"no modality has both attention and timing ({sorted(attention)} / {sorted(timing)})"
        )
    fig, axes = plt.subplots(
        len(names), 1, figsize=(7, 1.2 + 1.5 * len(names)), sharex=True, squeeze=False
    )
    for i, (ax, m) in enumerate(zip(axes[:, 0], names, strict=True)):
        w = np.asarray(attention[m], np.float64).reshape(-1)
        times, valid = attention_positions(*timing[m], len(w), (strides or {}).get(m, 1))
        color = f"C{i}"
        for lo, hi in _runs(valid):
            ax.plot(
                times[lo:hi],
                w[lo:hi],
                color=color,
                marker="." if hi - lo < 40 else None,
                ms=4,
                lw=1.2,
                gid=m,
            )
        n = int(valid.sum())
        step = float(np.median(np.diff(times[valid]))) if n > 1 else float("nan")
        if n:
            ax.axhline(1.0 / n, color="0.6", lw=0.8, ls="--")
        what = (
            f"{n} steps, a step every {step * 1000:.0f} ms"
            if n > 1
            else "1 step"
            if n
            else "no valid rows (nothing to draw)"
        )
        ax.set_title(f"{m}: {what}", fontsize=8, loc="left")
        ax.set_ylabel("weight", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
    axes[-1, 0].set_xlabel("time in the clip (s)")
    if title:
        fig.suptitle(title[:80], fontsize=9)
    fig.tight_layout()
    return fig


def plot_attention(
    attention: Mapping[str, Any],
    timing: Mapping[str, tuple[Any, Any]],
    path: Path,
    strides: Mapping[str, int] | None = None,
    title: str = "",
) -> Path:
    """``attention_figure`` written to ``path`` (PNG); returns the path."""
    plt = pyplot()
    fig = attention_figure(attention, timing, strides, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
