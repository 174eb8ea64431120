"""Dated markdown benchmark tables (``make bench``): one file per day, one section per bench."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Where the dated tables go unless a bench is given ``out_dir``: ``$AVEMO_BENCH_DIR``, else
#: ``workflows/bench_results`` in the working directory (the repository root under ``make bench``).
RESULTS_DIR = Path(os.environ.get("AVEMO_BENCH_DIR", "workflows/bench_results"))


def machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        tv = torch.__version__
    except ImportError:  # pragma: no cover
        gpu, tv = "?", "?"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {tv}"


def write_section(title: str, rows: Sequence[Mapping[str, Any]], notes: str = "",
                  out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Append (or replace) section ``title`` in today's results file; returns the file."""
    out = Path(out_dir or os.environ.get("AVEMO_BENCH_DIR", RESULTS_DIR))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y-%m-%d')}.md"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    table += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    body = f"## {title}\n\n_{time.strftime('%Y-%m-%d %H:%M')} · {machine()}_\n\n"
    body += "\n".join(table) + "\n" + (f"\n{notes.strip()}\n" if notes else "") + "\n"
    text = path.read_text() if path.exists() else f"# Benchmarks {time.strftime('%Y-%m-%d')}\n\n"
    start = text.find(f"## {title}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + body + (text[end + 1 :] if end >= 0 else "")
    else:
        text += body
    path.write_text(text)
    return path
