"""Provenance: what made a feature file, its hash, and the checks that refuse to mix files made differently."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from avemo import __version__
from avemo.data.store.format import FORMAT_VERSION, canonical
from avemo.errors import UserError

PROVENANCE_KEYS = ("feature_set", "config", "weights")  # what must match to mix shards


class ConfigMismatchError(UserError, RuntimeError):
    """Cached features were made with another config than the one asked for."""


def config_hash(provenance: Mapping[str, Any]) -> str:
    """Hash of what decides the numbers: feature-set name, extractor config, weight checksums."""
    core = {k: provenance.get(k) for k in PROVENANCE_KEYS}
    return hashlib.sha256(canonical(core).encode()).hexdigest()[:16]


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list | tuple):
        return {prefix: json.loads(canonical(list(obj)))}
    return {prefix: obj}


def diff_provenance(have: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two provenances, limited to what must match.

    Nested config keys are reported dotted (``config.stft.n_fft``), weights by name
    (``weights.onet``).
    """
    a = _flatten({k: have.get(k) for k in PROVENANCE_KEYS})
    b = _flatten({k: want.get(k) for k in PROVENANCE_KEYS})
    lines = []
    for key in sorted(set(a) | set(b)):
        if json.loads(canonical(a.get(key))) != json.loads(canonical(b.get(key))):
            lines.append(
                f"{key}: cached {a.get(key, '<absent>')!r} != requested {b.get(key, '<absent>')!r}"
            )
    return lines


def expectation_diffs(have: Mapping[str, Any], expect: Mapping[str, Any]) -> list[str]:
    """Differences between a file's provenance and a run config's *partial* expectation.

    ``expect`` may give ``config_hash`` and/or provenance keys (``feature_set``, ``weights``,
    ``config``); a partial ``config`` checks only the keys it names, so a training config can
    pin what matters to it without repeating the whole extractor config.
    """
    expect = dict(expect)
    want_hash = expect.pop("config_hash", None)
    if want_hash is not None and str(have.get("config_hash")) != str(want_hash):
        return [f"config_hash: cached {have.get('config_hash')!r} != requested {want_hash!r}"]
    want = {k: have.get(k) for k in PROVENANCE_KEYS}
    for k, v in expect.items():
        if k == "config" and isinstance(v, Mapping) and isinstance(want["config"], Mapping):
            want["config"] = {**want["config"], **v}
        else:
            want[k] = v
    return diff_provenance(have, want)


def check_provenance(have: Mapping[str, Any], want: Mapping[str, Any], where: str) -> None:
    diffs = diff_provenance(have, want)
    if diffs:
        raise ConfigMismatchError(
            f"{where} was made with another config; differing keys:\n  "
            + "\n  ".join(diffs)
            + "\nUse another output folder, pass --new-on-mismatch (writes <set>-<hash>.h5), "
            "or delete the cached file."
        )


def make_provenance(
    feature_set: str,
    config: Mapping[str, Any],
    weights: Mapping[str, str] | None = None,
    rate_hz: float | None = None,
    versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Provenance record written into every shard and final file."""
    prov: dict[str, Any] = {
        "feature_set": feature_set,
        "config": json.loads(canonical(dict(config))),
        "weights": dict(weights or {}),
        "rate_hz": rate_hz,
        "versions": {"avemo": __version__, **dict(versions or {})},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    prov["config_hash"] = config_hash(prov)
    return prov


def write_attrs(f: h5py.File, provenance: Mapping[str, Any], row_shape: tuple) -> None:
    """A file's attributes: format version, provenance (JSON unless a string), row shape."""
    f.attrs["format_version"] = FORMAT_VERSION
    for key, value in provenance.items():
        if key not in ("format_version", "row_shape"):
            f.attrs[key] = value if isinstance(value, str) else canonical(value)
    f.attrs["row_shape"] = json.dumps(list(row_shape))


def read_provenance(f: h5py.File) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out
