"""One base class for every mistake that is the user's to fix.

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


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``", did you mean X?"`` for a close match among ``known``, else ``""``."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f", did you mean {close[0]}?" if close else ""

