"""The ``python -m avemo.workflows.<name>`` entry shared by the workflows that are also ``avemo``
subcommands: the same options (``add_arguments``) and the same user-error rule as ``avemo``
(one message, exit 2, no traceback)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from avemo.errors import UserError


def module_main(
    name: str,
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv`` with ``add_arguments`` and ``run`` it; ``name`` is the subcommand
    (``avemo NAME: error: ...``), ``doc`` the module docstring (its first line describes)."""
    p = argparse.ArgumentParser(
        prog=f"python -m avemo.workflows.{name}", description=doc.splitlines()[0]
    )
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except UserError as e:  # the user's to fix: one message, no traceback
        print(f"avemo {name}: error: {e}", file=sys.stderr)
        return 2
