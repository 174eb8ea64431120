"""Crash-safe file operations: fsync and rename, the room check, the disk-full message, the test stall."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

from avemo import settings
from avemo.errors import DiskFullError

# Test hook: seconds to stall inside every shard / final-file write, while the ``.tmp`` file is
# half written, so the kill-and-resume tests can SIGKILL a real run exactly there on a busy
# machine (those windows last microseconds otherwise). Changes no output; unset in real runs.
# Read at each write, not at import: the tests set it in a child process's environment
# (tests/conftest.py: the ``slow_writes`` fixture); in-process, ``monkeypatch.setenv`` reaches it.
SLOW_WRITE_ENV = "AVEMO_TEST_SLOW_WRITE"  # declared in avemo.settings (test_slow_write)


def stall() -> None:
    """Sleep ``$AVEMO_TEST_SLOW_WRITE`` seconds where a write is half done (test hook)."""
    seconds = settings.current().test_slow_write
    if seconds > 0:
        time.sleep(seconds)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_replace(tmp: Path, final: Path) -> None:
    """fsync the data, rename over ``final``, fsync the folder: all or nothing, even on power loss."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def check_room(path: Path, need_bytes: int, what: str) -> None:
    """Refuse before writing when the filesystem plainly lacks the room."""
    if shutil.disk_usage(path.parent).free < need_bytes:
        raise disk_full(path, need_bytes, what)


def disk_full(path: Path, need_bytes: int, what: str) -> DiskFullError:
    """The one message for ENOSPC: where, how much is free, about how much this step needs."""
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    e = DiskFullError(
        f"disk full writing {path}: {free / 1e6:.1f} MB free on its filesystem, {what} needs about "
        f"{need_bytes / 1e6:.1f} MB; free space or write elsewhere (-o), then rerun the same "
        "command: committed clips are kept and it resumes after them"
    )
    e.errno, e.filename = errno.ENOSPC, str(path)
    return e
