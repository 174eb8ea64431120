"""Progress output: a tqdm bar on a terminal, plain lines into a log, silence with -q."""

from __future__ import annotations

import io
import logging

from avemo.progress import Progress, hms, setup_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_eta_is_hours_minutes_seconds() -> None:
    assert hms(0) == "0:00:00" and hms(59.6) == "0:01:00" and hms(3725) == "1:02:05"
    assert hms(float("nan")) == "?"


def test_terminal_gets_a_tqdm_bar_with_both_rates_and_the_eta() -> None:
    out = Terminal()
    with Progress("logmel", 4, "clips", "audio-s", stream=out) as p:
        for _ in range(4):
            p.update(1, amount=2.5, bad=0)
    last = out.getvalue().split("\r")[-1].strip()
    assert last.startswith("logmel: 100%|") and "4/4 clips" in last
    assert "clips/s" in last and "audio-s/s" in last and "ETA 0:00:00]" in last


def test_log_file_gets_plain_lines_without_carriage_returns() -> None:
    out = io.StringIO()
    with Progress("grid zhou", 3, "cells", stream=out, every_s=0) as p:
        for i in range(3):
            p.update(1, bad=int(i == 1))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("[grid zhou] 1/3 cells (33%)") and "ETA" in lines[0]
    assert lines[-1].startswith("[grid zhou] 3/3 cells (100%)") and "1 not ok" in lines[-1]


def test_quiet_silences_progress() -> None:
    out = io.StringIO()
    try:
        setup_logging(-1)
        with Progress("logmel", 2, stream=out, every_s=0) as p:
            p.update()
            p.update()
        assert out.getvalue() == ""
    finally:  # back to a library's default: no handler of ours, level unset
        root = logging.getLogger("avemo")
        for h in [h for h in root.handlers if getattr(h, "_avemo_cli", False)]:
            root.removeHandler(h)
        root.setLevel(logging.NOTSET)
        root.propagate = True
