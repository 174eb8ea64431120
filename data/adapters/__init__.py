"""Dataset adapters: turn a dataset's own folder layout into a manifest (registry: DATASETS)."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from avemo.data.manifest import validate
from avemo.data.registry import Registry, load_plugins

DATASETS: Registry = Registry("dataset", group="avemo.datasets")


def load_all() -> None:
    """Every adapter module of this package, ``AVEMO_PLUGINS`` modules, entry points."""
    load_plugins([__name__], [DATASETS])


def build_manifest(dataset: str, root: str | os.PathLike[str], **options: Any) -> pd.DataFrame:
    """Scan ``root`` with the named adapter and return a validated manifest."""
    load_all()
    adapter = DATASETS.build(dataset, **options)
    df = adapter.scan(root)
    return validate(df, classes=getattr(adapter, "classes", None), check_files=True)
