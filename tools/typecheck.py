"""``make lint``'s type check: mypy over the whole ``avemo`` package ([tool.mypy] in pyproject.toml).

Runs on the symlinked source tree (``tools/src_tree.py``) so ``avemo.data`` & co. resolve to the
checkout's folders the way setup.py's ``package_dir`` maps them.
"""

from __future__ import annotations

import os
import subprocess
import sys

from src_tree import ROOT, source_tree


def main() -> int:
    top = source_tree()
    env = {**os.environ, "MYPYPATH": str(top)}
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    cmd += ["--cache-dir", str(ROOT / ".cache" / "mypy"), "-p", "avemo"]
    return subprocess.run(cmd, cwd=top, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
