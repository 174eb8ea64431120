"""The extending tutorial's plugin examples, loaded as one-file plugins by the registry tests."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "extending.md"


def tutorial_block(marker: str) -> str:
    """The tutorial's Python block that contains ``marker`` (e.g. ``register("lab")``)."""
    blocks = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), re.S)
    return next(b for b in blocks if marker in b)


def load_tutorial_plugin(
    marker: str, registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write that block to a file and import it: its registration lasts for the test only."""
    path = tmp_path / "tutorial_plugin.py"
    path.write_text(tutorial_block(marker))
    for attr in ("_items", "_help", "_keys"):
        monkeypatch.setattr(registry, attr, dict(getattr(registry, attr)))
    spec = importlib.util.spec_from_file_location("tutorial_plugin", path)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
