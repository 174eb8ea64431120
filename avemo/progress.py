"""Progress of long loops (extraction clips, grid cells) the way people know it.

On a terminal: a tqdm bar (``n/total``, clips/s and the set's own rate -- frames/s or audio
seconds per second -- and the ETA as h:mm:ss). Into a log file (stderr not a terminal): one
plain line every ``AVEMO_PROGRESS_EVERY_S`` seconds (default 30) and a
last one at the end, never ``\\r`` redraws. ``-q`` (logging level WARNING) silences both.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, TextIO

from avemo import settings


def hms(seconds: float) -> str:
    """``h:mm:ss`` (``?`` while unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """``update(n, amount, bad)`` after each item; ``close()`` at the end (or use ``with``).

    ``amount_unit`` (e.g. ``frames``, ``audio-s``) adds a second rate: ``amount`` per second.
    """

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str = "clips",
        amount_unit: str | None = None,
        enabled: bool = True,
        stream: TextIO | None = None,
        every_s: float | None = None,
    ) -> None:
        self.desc, self.total, self.unit, self.amount_unit = desc, int(total), unit, amount_unit
        self.stream = stream or sys.stderr
        # off with -q (the CLI sets the "avemo" logger to WARNING); on when nobody configured it
        self.enabled = enabled and total > 0 and logging.getLogger("avemo").level <= logging.INFO
        self.every_s = float(
            every_s if every_s is not None else settings.current().progress_every_s
        )
        self.done = self.bad = 0
        self.amount = 0.0
        self.t0 = self._last = time.perf_counter()
        self._bar: Any = None
        if self.enabled and _isatty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                desc=desc,
                unit=unit.rstrip("s"),
                file=self.stream,
                bar_format="{desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} "
                + unit
                + " [{elapsed}{postfix}]",
                mininterval=0.5,
                dynamic_ncols=True,
                leave=True,
            )

    # -- numbers ---------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return max(time.perf_counter() - self.t0, 1e-9)

    def eta_s(self) -> float:
        return (self.total - self.done) * self._elapsed() / self.done if self.done else math.nan

    def stats(self) -> str:
        dt = self._elapsed()
        parts = [f"{self.done / dt:.2f} {self.unit}/s"]
        if self.amount_unit:
            parts.append(f"{self.amount / dt:.1f} {self.amount_unit}/s")
        if self.bad:
            parts.append(f"{self.bad} not ok")
        parts.append(f"ETA {hms(self.eta_s())}")
        return ", ".join(parts)

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return f"[{self.desc}] {self.done}/{self.total} {self.unit} ({pct:.0f}%), {self.stats()}"

    # -- updates ---------------------------------------------------------------------------
    def update(self, n: int = 1, amount: float = 0.0, bad: int = 0) -> None:
        self.done += n
        self.amount += amount
        self.bad += bad
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._bar is not None:
            if now - self._last >= 0.5 or self.done >= self.total:
                self._bar.set_postfix_str(self.stats(), refresh=False)
                self._last = now
            self._bar.update(n)
        elif now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            self._plain(self.line())

    def write(self, msg: str) -> None:
        """A note that does not break the bar (else an INFO log line)."""
        if self._bar is not None:
            self._bar.write(msg, file=self.stream)
        else:
            self._plain(msg)

    def _plain(self, msg: str) -> None:
        self.stream.write(msg + "\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self.stats(), refresh=True)
            self._bar.close()
            self._bar = None
        elif self.done:
            self._plain(self.line())
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test)."""

    _avemo_cli = True  # marks the handler setup_logging adds, so a second call replaces it

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup_logging(verbosity: int = 0) -> None:
    """CLI logging: ``-q`` (-1) warnings only, default info (progress, notes), ``-v`` (1) debug.

    Messages go to stderr as they are (``[set] note``), without level or logger prefixes, so
    library notes -- skipped clips, CPU fallbacks -- read the same in a grid as alone.
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    root = logging.getLogger("avemo")
    for h in list(root.handlers):
        if getattr(h, "_avemo_cli", False):
            root.removeHandler(h)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
