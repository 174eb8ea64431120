"""Lay out avemo's sources in the installed package's shape, for tools that read source statically.

avemo's subpackages live in top-level folders (``data/`` is ``avemo.data``: setup.py's
``package_dir``), a layout that static readers (griffe for the docs, mypy for ``make lint``)
cannot follow. ``source_tree()`` builds ``.cache/src-tree/avemo`` as symlinks to the real folders,
so both read the checkout itself, never a copy.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = ROOT / ".cache" / "src-tree"


def package_roots() -> dict[str, str]:
    """setup.py's ``ROOTS`` (package -> folder), read, not re-typed here."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    node = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ROOTS"
    )
    return ast.literal_eval(node.value)


def source_tree(top: Path = TOP) -> Path:
    """``top`` holding ``avemo/`` in the installed package's shape (symlinks); returns ``top``."""
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
    for stale in pkg.iterdir():  # a module removed from avemo/ since the last layout
        if stale.is_symlink() and stale.name not in links:
            stale.unlink()
    for name, target in links.items():
        link = pkg / name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return top


if __name__ == "__main__":
    print(source_tree())
