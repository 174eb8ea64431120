"""Audio benchmark (``make bench``): audio seconds processed per wall second, per feature set.

Input: the EmoDB subset in ``../shared/data/emodb-8spk`` (411 x 2.0 s, 22.05 kHz WAV), else
``sample.wav`` repeated. Each row runs ``FeatureSet.extract`` in batches of 8 clips, as the
runner does (decode + resample + compute; HDF5 writing is not timed), and checks the output
the way the real-data test does: status ok, finite, rows of the documented shape.
VGGish and CNN14 run with generated weights of the released shapes (speed does not depend on
the values) on a subset, since their weights cannot be fetched here. GPU rows are added when
CUDA is available (torch path of the spectral sets; CNNs on CUDA).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from avemo import settings
from avemo.bench.inputs import emodb
from avemo.bench.table import write_section
from avemo.data.assets import media
from avemo.extract.audio.panns import build_cnn14
from avemo.extract.audio.vggish import build_vggish
from avemo.extract.base import ClipInput
from avemo.extract.registry import FEATURE_SETS, load_all


def _clips(quick: bool) -> tuple[list[ClipInput], str]:
    root = emodb()  # $AVEMO_EMODB, else ../shared/data/emodb-8spk from the working directory
    wavs = sorted((root / "wav").glob("*.wav")) if root.exists() else []
    if wavs:
        wavs = wavs[:40] if quick else wavs
        return [ClipInput(p.stem, audio=str(p)) for p in wavs], f"EmoDB ({len(wavs)} files)"

    n = 4 if quick else 20
    return [
        ClipInput(f"s{i}", audio=str(media("sample.wav"))) for i in range(n)
    ], f"sample.wav x{n}"


def _generated_weights(tmp: Path) -> None:
    """State dicts of the released shapes for VGGish / CNN14 (benchmark only)."""
    import torch

    for env, build, name in (
        ("AVEMO_WEIGHTS_VGGISH", build_vggish, "vggish.pth"),
        ("AVEMO_WEIGHTS_PANNS_CNN14", build_cnn14, "cnn14.pth"),
    ):
        if settings.current().weights_override(env) is None:
            torch.save(build().state_dict(), tmp / name)
            os.environ[env] = str(tmp / name)


def run_one(
    name: str,
    clips: list[ClipInput],
    device: str = "cpu",
    backend: str | None = None,
    config: dict | None = None,
    batch: int = 8,
) -> dict[str, Any]:
    load_all()
    cls = FEATURE_SETS.get(name)
    fs = cls(config, device, backend=backend)
    fs.provenance()  # resolve weights / sessions outside the timing
    list(fs.extract(clips[:1]))  # warm-up (sessions, kernels, caches)
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(clips), batch):
        out.extend(fs.extract(clips[i : i + batch]))
    wall = time.perf_counter() - t0
    durations = _durations(clips)
    ok = [c for c in out if c.status == "ok"]
    clean = all(
        np.isfinite(c.values).all() and c.values.shape[1:] == fs.row_shape() and len(c.values)
        for c in ok
    )
    rows = np.array([len(c.values) for c in ok])
    return {
        "feature set": name,
        "device": device,
        "path": fs.backend
        if name in ("spectrogram", "logmel", "mfcc")
        else ("onnxruntime" if name == "speech_embedding" else "torch"),
        "clips": len(clips),
        "audio s": round(sum(durations), 1),
        "wall s": round(wall, 2),
        "audio s / wall s": sum(durations) / wall,
        "status ok": f"{len(ok)}/{len(out)}",
        "finite+shape": "yes" if clean else "NO",
        "row shape": str(fs.row_shape()),
        "rows/clip": f"{rows.min()}-{rows.max()}" if len(rows) else "-",
    }


def _durations(clips: list[ClipInput]) -> list[float]:
    import soundfile as sf

    return [sf.info(c.audio).duration for c in clips]


def main(quick: bool = False) -> Path:
    import torch

    clips, source = _clips(quick)
    sub = clips[: 8 if quick else 40]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _generated_weights(Path(tmp))
        for name in ("spectrogram", "logmel", "mfcc"):
            rows.append(run_one(name, clips, backend="numpy"))
            rows.append(run_one(name, clips, backend="torch"))
        rows.append(run_one("speech_embedding", clips))
        rows.append(run_one("vggish", sub) | {"feature set": "vggish (generated weights)"})
        rows.append(
            run_one("panns_cnn14", sub) | {"feature set": "panns_cnn14 (generated weights)"}
        )
        if torch.cuda.is_available():
            for name in ("spectrogram", "logmel", "mfcc"):
                rows.append(run_one(name, clips, device="cuda", batch=64))
            rows.append(run_one("speech_embedding", clips, device="cuda"))
            rows.append(
                run_one("vggish", clips, device="cuda", batch=64)
                | {"feature set": "vggish (generated weights)"}
            )
            rows.append(
                run_one("panns_cnn14", clips, device="cuda", batch=64)
                | {"feature set": "panns_cnn14 (generated weights)"}
            )
    notes = (
        f"Input: {source}; batches of 8 clips (64 on GPU) through `FeatureSet.extract` "
        "(decode + soxr resample + compute; HDF5 writes not timed). `status ok` and "
        "`finite+shape` are the real-data check (every clip ok, no NaN/inf, documented row "
        f"shape). CNN rows with generated weights run on {len(sub)} clips on CPU. "
        f"torch threads: {torch.get_num_threads()}. "
        "Reproduce: `.venv/bin/python -m avemo.bench --only audio`."
    )
    return write_section("Audio features (stage one)", rows, notes)
