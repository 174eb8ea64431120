"""Exceptions that are the user's to fix: printed as one message, never a traceback."""

from __future__ import annotations

import importlib

_SOURCES = [
    ("avemo.data.manifest", "ManifestError"),
    ("avemo.data.store", "ConfigMismatchError"),
    ("avemo.data.store", "FeatureFileError"),
    ("avemo.data.registry", "UnknownNameError"),
    ("avemo.data.pypi_fetch", "FetchError"),
    ("avemo.extract.weights", "MissingWeightsError"),
    ("avemo.fusion.config", "ConfigError"),
]


def _collect() -> tuple[type[BaseException], ...]:
    out: list[type[BaseException]] = [FileNotFoundError]
    for mod, name in _SOURCES:
        try:
            out.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            continue
    return tuple(out)


USER_ERRORS = _collect()
