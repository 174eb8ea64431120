"""MkDocs hook: let mkdocstrings find ``avemo.data`` & co. by reading source, not importing.

avemo's subpackages live in top-level folders (``data/`` is ``avemo.data``: setup.py's
``package_dir``), a layout griffe's static finder cannot follow. Before the build this lays out
``.cache/docs-src/avemo`` as symlinks in the installed shape which mkdocs.yml's handler ``paths`` names.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def package_roots() -> dict[str, str]:
    """setup.py's ``ROOTS`` (package -> folder), read, not re-typed here."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    node = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ROOTS"
    )
    return ast.literal_eval(node.value)


def source_tree() -> Path:
    """``.cache/docs-src`` holding ``avemo/`` in the installed package's shape (symlinks)."""
    top = ROOT / ".cache" / "docs-src"
    pkg = top / "avemo"
    pkg.mkdir(parents=True, exist_ok=True)
    links = {p.name: p for p in (ROOT / "avemo").iterdir() if p.suffix == ".py"}
    links.update(
        {
            pkg_name.split(".", 1)[1]: ROOT / folder
            for pkg_name, folder in package_roots().items()
            if "." in pkg_name
        }
    )
    for name, target in links.items():
        link = pkg / name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return top


def on_startup(**_: Any) -> None:
    source_tree()  # mkdocs.yml's handler ``paths`` names it
