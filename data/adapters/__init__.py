"""Dataset adapters: turn a dataset's own folder layout into a manifest (registry: DATASETS)."""

from __future__ import annotations

import importlib
import os
from typing import Any

import pandas as pd

from avemo.data.manifest import validate
from avemo.data.registry import Registry

DATASETS: Registry = Registry("dataset")

_MODULES = ["csv", "folder", "ravdess", "cremad", "afew", "emodb", "affwild2", "recola", "demo"]


def load_all() -> None:
    for m in _MODULES:
        try:
            importlib.import_module(f"avemo.data.adapters.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"avemo.data.adapters.{m}":
                raise


def build_manifest(dataset: str, root: str | os.PathLike[str], **options: Any) -> pd.DataFrame:
    """Scan ``root`` with the named adapter and return a validated manifest."""
    load_all()
    adapter = DATASETS.build(dataset, **options)
    df = adapter.scan(root)
    return validate(df, classes=getattr(adapter, "classes", None), check_files=True)
