"""Dataset adapters: turn a dataset's own folder layout into a manifest (registry: DATASETS)."""

from __future__ import annotations

import inspect
import os
from typing import Any

import pandas as pd

from avemo.data.manifest import validate
from avemo.data.registry import Registry, load_plugins
from avemo.errors import UsageError, did_you_mean

DATASETS: Registry = Registry("dataset", group="avemo.datasets")


def load_all() -> None:
    """Every adapter module of this package, ``AVEMO_PLUGINS`` modules, entry points."""
    load_plugins([__name__], [DATASETS])


def build_manifest(dataset: str, root: str | os.PathLike[str], **options: Any) -> pd.DataFrame:
    """Scan ``root`` with the named adapter and return a validated manifest."""
    load_all()
    check_options(dataset, options)
    adapter = DATASETS.build(dataset, **options)
    df = adapter.scan(root)
    return validate(df, classes=getattr(adapter, "classes", None), check_files=True)


def check_options(dataset: str, options: dict[str, Any]) -> None:
    """An option the adapter does not take (not a named constructor argument) is a user mistake:
    one message naming it and the options there are, before the root is scanned (not a
    TypeError from the constructor)."""
    params = inspect.signature(DATASETS.get(dataset)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in options:
        if key not in known:
            takes = ", ".join(known) if known else "none"
            raise UsageError(
                f"--option {key}: the {dataset} adapter has no option {key!r}"
                f"{did_you_mean(key, known)} (its options: {takes})"
            )
