"""Self-supervised speech encoders: CPU cost per hour of audio, and how stage two reads the layers.

``python -m avemo.bench.ssl [--quick] [--seconds S] [-o FILE]`` (needs the ``[ssl]`` extra).

1. **Cost**: ``speech_wavlm`` / ``speech_hubert`` / ``speech_wav2vec2`` with randomly initialised
   models of the base checkpoints' real size (transformers' default configs: 12 layers x 768,
   the 7-layer 512-channel CNN; speed does not depend on the values: the real weights cannot be
   fetched here), saved and loaded like a user's folder, run on ``S`` seconds of real speech
   (``sample.wav`` repeated) through ``compute`` (window 20 s, overlap 2 s: the defaults), every
   layer kept; seconds of compute per hour of audio = wall / S * 3600.
2. **Layer storage read**: the same rows ``[T, 13, 768]`` float16 stored as one file (rows
   ``[L, D]``, bytes identical to ``[L*D]``) or as one file per layer, read the way stage two
   does (``fusion.features.load_features``: the whole file into a float32 tensor), all layers or
   one layer. Files are freshly written, so reads come from the page cache (a training rerun's case).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from avemo.bench.table import output_file, set_output, write_section
from avemo.data.assets import media
from avemo.data.store import ClipFeatures, make_provenance, write_clips
from avemo.extract.registry import FEATURE_SETS, load_for
from avemo.fusion.features import load_features

FAMILIES = {"speech_wavlm": "WavLM", "speech_hubert": "Hubert", "speech_wav2vec2": "Wav2Vec2"}


def _speech(seconds: float) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(str(media("sample.wav")), dtype="float32")
    assert sr == 16000
    n = int(seconds * sr)
    return np.tile(x, -(-n // len(x)))[:n]


def cost_rows(seconds: float, families: list[str], tmp: Path) -> list[dict[str, Any]]:
    import torch
    import transformers

    load_for(families)
    x = _speech(seconds)
    rows = []
    for name in families:
        cls = FAMILIES[name]
        config = getattr(transformers, f"{cls}Config")()  # the base checkpoints' sizes
        torch.manual_seed(0)
        folder = tmp / name
        getattr(transformers, f"{cls}Model")(config).save_pretrained(folder)
        fs = FEATURE_SETS.build(name, {"backbone_weights": str(folder)}, "cpu")
        fs.provenance()  # load + hash outside the timing
        fs.compute([x[:16000]])  # warm-up
        t0 = time.perf_counter()
        ((v, _),) = fs.compute([x])
        wall = time.perf_counter() - t0
        params = sum(p.numel() for p in fs.net().parameters())
        rows.append(
            {
                "feature set": name,
                "model": f"{cls} base size, generated ({params / 1e6:.1f} M params)",
                "audio s": seconds,
                "wall s": round(wall, 1),
                "x real time": seconds / wall,
                "CPU s per audio hour": wall / seconds * 3600,
                "rows": f"{v.shape[0]} x {list(v.shape[1:])}",
                "float16 MB per audio hour": v.nbytes / seconds * 3600 / 1e6,
                "threads": torch.get_num_threads(),
            }
        )
    return rows


def read_rows(
    n_clips: int, frames: int, n_layers: int = 13, width: int = 768, repeats: int = 3
) -> list[dict[str, Any]]:
    import torch

    rng = np.random.default_rng(0)
    clips = [
        rng.standard_normal((frames, n_layers, width), np.float32).astype(np.float16)
        for _ in range(n_clips)
    ]
    ts = np.arange(frames) / 50.0
    out = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        prov = make_provenance("speech_wavlm", {}, rate_hz=50.0)
        one = write_clips(
            tmp / "all.h5",
            [ClipFeatures(f"c{i}", c, ts, np.ones(frames, bool)) for i, c in enumerate(clips)],
            prov,
        )
        per = []
        for layer in range(n_layers):
            p = tmp / f"layer{layer}.h5"
            write_clips(
                p,
                [
                    ClipFeatures(
                        f"c{i}", np.ascontiguousarray(c[:, layer]), ts, np.ones(frames, bool)
                    )
                    for i, c in enumerate(clips)
                ],
                prov,
            )
            per.append(p)

        def best(fn: Any) -> float:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        rows = n_clips * frames
        mb = rows * n_layers * width * 2 / 1e6
        cases = [
            ("one file, rows [L, D]", "all layers", lambda: load_features(one).values),
            (
                "one file per layer",
                "all layers",
                lambda: torch.stack([load_features(p).values for p in per], 1),
            ),
            ("one file, rows [L, D]", "one layer", lambda: load_features(one).values[:, 6].clone()),
            ("one file per layer", "one layer", lambda: load_features(per[6]).values),
        ]
        for layout, what, fn in cases:
            s = best(fn)
            read_mb = (
                mb / n_layers if (layout.startswith("one file per") and what == "one layer") else mb
            )
            out.append(
                {
                    "layout": layout,
                    "stage two reads": what,
                    "rows": rows,
                    "file MB read": round(read_mb),
                    "wall s (best of 3)": s,
                    "MB/s": read_mb / s,
                }
            )
    return out


def main(quick: bool = False, argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m avemo.bench --only ssl")
    p.add_argument(
        "--seconds", type=float, default=None, help="audio per family (default 60; quick 10)"
    )
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument(
        "--clips", type=int, default=None, help="read bench: clips of 250 rows (default 80)"
    )
    a = p.parse_args(argv or [])
    seconds = a.seconds or (10.0 if quick else 60.0)
    with tempfile.TemporaryDirectory() as d:
        cost = cost_rows(seconds, a.families, Path(d))
    write_section(
        "SSL speech encoders: CPU cost per hour of audio",
        cost,
        notes=(
            f"Real speech (`sample.wav` repeated to {seconds:g} s) through `compute` (20 s windows, 2 s "
            "overlap, every layer kept, float32 on the CPU); models of the base checkpoints' size with "
            "random weights (speed does not depend on the values). Extrapolated: CPU s per audio hour "
            "= wall / audio s x 3600. Machine shared with other jobs: an upper bound."
        ),
    )
    n = a.clips or (16 if quick else 80)
    path = write_section(
        "SSL layer storage: one file [T, L, D] vs one file per layer",
        read_rows(n, 250),
        notes=(
            f"{n} clips x 250 rows (5 s at 50 Hz) of 13 x 768 float16, read by stage two's "
            "`load_features` (whole file -> float32 tensor), best of 3, warm page cache. One layer from "
            "the one-file layout reads the whole file and keeps a slice; all layers from one file per layer "
            "includes stacking them into [N, L, D] (what the layer_weights encoder takes)."
        ),
    )
    return path


if __name__ == "__main__":
    import sys

    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("-o", "--output", default=None)
    ap.add_argument("--quick", action="store_true")
    known, rest = ap.parse_known_args(sys.argv[1:])
    set_output(known.output or output_file())
    print(main(known.quick, rest))
