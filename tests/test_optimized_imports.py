"""Stage one imports and registers the same under ``python -OO`` (docstrings stripped): no
module may compute anything from its own ``__doc__``."""

from __future__ import annotations

import json
import subprocess
import sys

#: Every stage-one module imported, then the registries listed, as JSON on stdout.
SCRIPT = """
import importlib, json, pkgutil
import avemo.extract as pkg
from avemo.extract import registry
failed = {}
for m in pkgutil.walk_packages(pkg.__path__, "avemo.extract."):
    try:
        importlib.import_module(m.name)
    except Exception as e:  # reported, compared with the plain run below
        failed[m.name] = type(e).__name__
registry.load_all()
print(json.dumps({"failed": failed, "registries": [sorted(r) for r in registry.REGISTRIES]}))
"""


def _run(*flags: str) -> dict:
    out = subprocess.run(
        [sys.executable, *flags, "-c", SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_stage_one_module_imports_under_OO_and_registers_the_same() -> None:
    stripped, plain = _run("-OO"), _run()
    assert stripped["failed"] == {}, stripped["failed"]
    assert plain["failed"] == {}
    assert stripped["registries"] == plain["registries"]
    assert all(stripped["registries"])  # every registry has entries: the import did register
