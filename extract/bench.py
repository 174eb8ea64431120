"""``python -m avemo.extract.bench``: stage-one benchmarks (faces, detectors, face crops, subject tracking, frame transport, runner hooks, audio) -> dated markdown."""

from __future__ import annotations

import argparse
import importlib

SECTIONS = {"faces": "avemo.extract.video.bench", "detectors": "avemo.extract.video.detector_bench",
            "runner": "avemo.extract.runner_bench", "audio": "avemo.extract.audio.bench",
            "crops": "avemo.extract.video.crop_bench", "subject": "avemo.extract.video.subject_bench",
            "transport": "avemo.extract.video.transport_bench"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avemo.extract.bench")
    p.add_argument("--only", choices=sorted(SECTIONS), action="append")
    p.add_argument("--quick", action="store_true", help="smaller inputs (smoke run)")
    a, _ = p.parse_known_args(argv)
    for name in a.only or sorted(SECTIONS):
        path = importlib.import_module(SECTIONS[name]).main(quick=a.quick)
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
