"""``python -m avemo.bench [--only SECTION ...] [-o FILE]``: the benchmarks -> one markdown file.

``-o FILE`` is where every section goes (default ``benchmarks/results/<date>.md`` relative
to the working directory, or ``$AVEMO_BENCH_DIR/<date>.md``); a section already in the file is
replaced. Options a section does not know are passed to the sections that take an ``argv``
(e.g. ``--only fusion --overhead``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import time

from avemo.bench.table import output_file, set_output

#: section -> module with ``main(...) -> Path`` (keywords it accepts: quick, device, step, argv)
SECTIONS = {
    "store": "avemo.bench.store",
    "faces": "avemo.bench.faces",
    "detectors": "avemo.bench.detectors",
    "backbones": "avemo.bench.backbones",
    "crops": "avemo.bench.crops",
    "subject": "avemo.bench.subject",
    "transport": "avemo.bench.transport",
    "runner": "avemo.bench.runner",
    "audio": "avemo.bench.audio",
    "fusion": "avemo.bench.fusion",
    "grid": "avemo.bench.grid",
    "layers": "avemo.bench.layers",
    "ssl": "avemo.bench.ssl",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m avemo.bench",
        description=__doc__.split("\n")[0],
        add_help=False,
        epilog="--only SECTION -h: also that section's options",
    )
    p.add_argument("-h", "--help", action="store_true", help="show this help message and exit")
    p.add_argument(
        "--only", choices=list(SECTIONS), action="append", help="repeatable; default: all"
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="markdown file for every section (default benchmarks/results/<date>.md)",
    )
    p.add_argument("--quick", action="store_true", help="smaller inputs (smoke run)")
    p.add_argument(
        "--device",
        default=None,
        help="cpu (default) or cuda; sections taking argv get it as --device",
    )
    p.add_argument("--crop-step", type=int, default=3, help="crops: every STEP-th RAVDESS frame")
    a, rest = p.parse_known_args(argv)
    if a.help:
        p.print_help()
        for name in a.only or []:
            run = importlib.import_module(SECTIONS[name]).main
            if "argv" in inspect.signature(run).parameters:
                print(f"\n--only {name}:")
                try:
                    run(argv=["-h"])
                except SystemExit:
                    pass
        return 0
    set_output(a.output or output_file())  # the date is fixed once, before sections run
    given = {"quick": a.quick, "device": a.device or "cpu", "step": a.crop_step, "argv": rest}
    t0 = time.perf_counter()
    for name in a.only or list(SECTIONS):
        run = importlib.import_module(SECTIONS[name]).main
        params = inspect.signature(run).parameters
        kw = {k: v for k, v in given.items() if k in params}
        if "argv" in kw and "device" not in params and a.device:
            kw["argv"] = [*rest, "--device", a.device]
        result = run(**kw)
        print(f"{name}: {result if result not in (0, None) else output_file()}")
    print(f"done in {time.perf_counter() - t0:.0f} s -> {output_file()}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # subprocess benches (grid) print as they go
    raise SystemExit(main())
