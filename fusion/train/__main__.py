"""``python -m avemo.fusion.train CONFIG [key=value ...]``: ``avemo fuse-train -c CONFIG
[key=value ...]`` itself (the one entry point: same options, output and exit codes).

Its own module, not ``fusion.train``'s: the CLI imports the trainer, and the trainer never
imports the CLI back (no import cycle; ``tests/test_import_cycles.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from avemo.cli import main as cli


def main(argv: Sequence[str] | None = None) -> int:
    """``CONFIG [key=value ...]`` as ``avemo fuse-train -c CONFIG [key=value ...]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        return cli(["fuse-train", *args])  # its usage / -h / --print-config without a CONFIG
    return cli(["fuse-train", "-c", args[0], *args[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
