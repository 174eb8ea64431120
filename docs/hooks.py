"""MkDocs hook: let mkdocstrings find ``avemo.data`` & co. by reading source, not importing.

avemo's subpackages live in top-level folders (``data/`` is ``avemo.data``: setup.py's
``package_dir``), a layout griffe's static finder cannot follow. Before the build this lays out
``.cache/src-tree/avemo`` (``tools/src_tree.py``, shared with the type check) which mkdocs.yml's
handler ``paths`` names.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from src_tree import source_tree  # noqa: E402


def on_startup(**_: Any) -> None:
    source_tree()  # mkdocs.yml's handler ``paths`` names it
