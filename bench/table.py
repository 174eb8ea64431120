"""Dated markdown benchmark tables: one file per day (or the file given), one section per bench.

Where tables go is explicit: ``python -m avemo.bench -o FILE`` sets the file for every section
(``set_output``); without it, ``$AVEMO_BENCH_DIR/<date>.md``, else
``benchmarks/results/<date>.md`` relative to the working directory (the repository root
under ``make bench``). Nothing here is computed from ``__file__``.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avemo import settings

_output: Path | None = None


def set_output(path: str | os.PathLike[str] | None) -> None:
    """Every later ``write_section`` without ``out`` writes to ``path`` (None: the dated default)."""
    global _output
    _output = Path(path) if path is not None else None


def output_file(out: str | os.PathLike[str] | None = None) -> Path:
    """``out``, else the file ``set_output`` chose, else today's file in the results folder."""
    if out is not None:
        return Path(out)
    if _output is not None:
        return _output
    folder = settings.current().bench_dir
    return folder / f"{time.strftime('%Y-%m-%d')}.md"


def machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        tv = str(torch.__version__)
    except ImportError:  # pragma: no cover
        gpu, tv = "?", "?"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {tv}"
    )


def write_section(
    title: str,
    rows: Sequence[Mapping[str, Any]],
    notes: str = "",
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Append (or replace) section ``title`` in the results file (``output_file(out)``); returns it."""
    path = output_file(out)
    path.parent.mkdir(parents=True, exist_ok=True)
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
