"""One base class for every mistake that is the user's to fix, one for faults they resolve.

The CLI catches ``UserError`` and prints its message once (``avemo CMD: error: ...``, exit 2,
no traceback). Library code raises a subclass where the input that was wrong is the user's
(a config key, a manifest, a path given on the command line) -- never because of the
exception's built-in type: a ``FileNotFoundError`` from deep inside a library is a bug
report, not a user error.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix: the message names the thing and the fix."""


class UsageError(UserError, ValueError):
    """A command-line value that cannot be used (a path that does not exist, a bad option)."""


class FeatureConfigError(UserError, ValueError):
    """A feature-set config key that is unknown or whose value is out of range / of wrong type."""


class OutputLockedError(UserError, RuntimeError):
    """Another process is writing the same output feature file."""


class Fault(Exception):
    """Not the user's mistake but theirs to resolve (a full disk, a damaged file): one message
    naming the path and what to do, exit status ``exit_code``, and a rerun resumes."""

    exit_code = 1


class DiskFullError(Fault, OSError):
    """No space left while writing: finished work is committed, the rerun resumes after it."""

    exit_code = 74  # sysexits EX_IOERR

    def __str__(self) -> str:  # the message alone, not OSError's "[Errno 28] ..." form
        return str(self.args[0]) if self.args else "disk full"


class DamagedFileError(Fault, ValueError):
    """A feature file whose stored checksums no longer match its contents (or cannot be read)."""

    exit_code = 65  # sysexits EX_DATAERR


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC, also where HDF5 reports it only in its message (a failed write seen at close)."""
    text = str(e)
    if isinstance(e, OSError) and e.errno == 28:
        return True
    return isinstance(e, OSError | RuntimeError) and (
        "No space left on device" in text or "errno = 28," in text
    )


EXIT_CODES = {
    "user error": 2,
    "damaged file": DamagedFileError.exit_code,
    "disk full": DiskFullError.exit_code,
    "interrupted (Ctrl-C)": 130,
}


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``", did you mean X?"`` for a close match among ``known``, else ``""``."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f", did you mean {close[0]}?" if close else ""
