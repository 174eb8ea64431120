"""MkDocs hook: let mkdocstrings find ``avemo.data`` & co. by reading source, not importing.

avemo's subpackages live in top-level folders (``data/`` is ``avemo.data``: setup.py's
``package_dir``), a layout griffe's static finder cannot follow. Before the build this lays out
``.cache/src-tree/avemo`` (``tools/src_tree.py``, shared with the type check) which mkdocs.yml's
handler ``paths`` names. It also renders docs/adapters.md's table from the adapters themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from src_tree import source_tree  # noqa: E402

MARKER = "<!-- adapter-protocols: rendered by docs/hooks.py -->"


def on_startup(**_: Any) -> None:
    source_tree()  # mkdocs.yml's handler ``paths`` names it


def on_page_markdown(markdown: str, **_: Any) -> str:
    """docs/adapters.md's table, from the adapters' own ``protocol`` declarations."""
    if MARKER not in markdown:
        return markdown
    from avemo.data.adapters.protocol import protocol_table

    return markdown.replace(MARKER, protocol_table())
