"""``make gpu-check`` / ``python -m avemo.workflows.gpu_check``: every GPU path once, checked
against the CPU path, timed, written as dated rows into the benchmark file.

Paths: face detection (MTCNN, torch backend on the GPU), face backbones under bf16 autocast,
audio CNNs (VGGish, one-channel ResNet-18), fusion training at Aff-Wild2 scale (device-resident
batches vs a per-sample HDF5 loader, ``avemo.bench.fusion``), and a stacked grid (``fusion.stacked``)
against the same cells trained on the CPU. Each row says the device result, the CPU result's
difference and the tolerance (bf16 paths compare cosine similarity). About 5 minutes on one
H100 (most of it writing the generated Aff-Wild2-scale file).

Exit codes: 0 every check passed; 1 a check failed (its row says which); 3 no CUDA device
(nothing measured; ``--device cpu --tiny`` runs the whole script on the CPU in a minute, which
the tests do so the script cannot rot).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avemo.bench import fusion as FB
from avemo.bench.table import write_section
from avemo.data.assets import media
from avemo.extract.audio.vggish import build_vggish
from avemo.extract.audio.windowed import build_audio_resnet18
from avemo.extract.registry import BACKBONES
from avemo.extract.video import backbones  # noqa: F401 - registers
from avemo.extract.video.detectors.mtcnn import MTCNN
from avemo.fusion.config import load_config
from avemo.fusion.stacked import fit_stacked
from avemo.fusion.train import build_datamodule, build_model

NO_CUDA = 3
TITLE = "GPU check: every GPU path once, against the CPU path"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _forward_cpu(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dev: torch.device
) -> torch.Tensor:
    """``net`` on ``x`` moved to ``dev``, the output back on the CPU as float32 (to compare)."""
    return net(x.to(dev)).float().cpu()


def _timed(fn: Callable[[], Any], dev: torch.device) -> tuple[Any, float]:
    _sync(dev)
    t0 = time.perf_counter()
    out = fn()
    _sync(dev)
    return out, time.perf_counter() - t0


def _face_frames(n: int) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(media("single_face.jpg")).convert("RGB"))
    return np.stack([img] * n)


def check_detection(dev: torch.device, tiny: bool) -> dict[str, Any]:
    frames = _face_frames(4 if tiny else 64)
    gpu = MTCNN(device=str(dev))
    cpu = MTCNN(device="cpu")
    gpu.detect(frames[:2])  # warm-up (kernels, allocator)
    got, s = _timed(lambda: gpu.detect(frames), dev)
    ref = cpu.detect(frames[:2])
    same = all(len(a) == len(b) for a, b in zip(got, ref, strict=False))
    diff = max(
        (float(np.abs(a.boxes - b.boxes).max()) for a, b in zip(got, ref, strict=False) if len(a)),
        default=0.0,
    )
    return {
        "check": "face detection (mtcnn)",
        "work": f"{len(frames)} frames {frames.shape[1]}x{frames.shape[2]}",
        "seconds": s,
        "vs CPU": f"faces equal: {same}; box max |diff| {diff:.2f} px",
        "tolerance": "2 px",
        "ok": same and diff <= 2.0,
    }


def check_backbones(dev: torch.device, tiny: bool) -> list[dict[str, Any]]:
    from PIL import Image

    rows = []
    frame = _face_frames(1)[0]
    for name in ("fer2013_minixception", "vggface2_resnet50", "ir50"):
        try:
            gpu, cpu = BACKBONES.build(name, device=str(dev)), BACKBONES.build(name, device="cpu")
        except Exception as e:  # noqa: BLE001 - weights not in this cache: say so, go on
            rows.append(
                {
                    "check": f"backbone {name}",
                    "work": "-",
                    "seconds": float("nan"),
                    "vs CPU": f"skipped: {type(e).__name__}: {str(e)[:80]}",
                    "tolerance": "-",
                    "ok": True,
                }
            )
            continue
        s_in = gpu.input_size
        crop = torch.from_numpy(np.asarray(Image.fromarray(frame).resize((s_in, s_in))))
        crops = crop[None].repeat(8 if tiny else 512, 1, 1, 1)
        crops[1::2] = crops[1::2].flip(2)  # two different inputs
        gpu.embed(crops[:2])
        got, s = _timed(functools.partial(gpu.embed, crops), dev)
        ref = cpu.embed(crops[:2])
        cos = float(torch.nn.functional.cosine_similarity(got[:2], ref, dim=1).min())
        tol = 0.99 if dev.type == "cuda" else 0.99999
        rows.append(
            {
                "check": f"backbone {name} ({'bf16' if dev.type == 'cuda' else 'fp32'})",
                "work": f"{len(crops)} crops {s_in}px",
                "seconds": s,
                "vs CPU": f"min cosine {cos:.5f}",
                "tolerance": f">= {tol}",
                "ok": cos >= tol,
            }
        )
    return rows


def check_audio(dev: torch.device, tiny: bool) -> list[dict[str, Any]]:
    rows = []
    g = torch.Generator().manual_seed(0)
    nets = [("vggish (generated weights)", lambda: build_vggish(), (1, 96, 64))]
    try:
        build_audio_resnet18(device="cpu")
        nets.append(
            (
                "audio_resnet18 (ImageNet conv1 summed)",
                lambda: build_audio_resnet18()[0],
                (1, 200, 64),
            )
        )
    except Exception as e:  # noqa: BLE001
        rows.append(
            {
                "check": "audio_resnet18",
                "work": "-",
                "seconds": float("nan"),
                "vs CPU": f"skipped: {type(e).__name__}",
                "tolerance": "-",
                "ok": True,
            }
        )
    for name, build, shape in nets:
        torch.manual_seed(0)
        cpu = build().eval()
        gpu = build().eval()
        gpu.load_state_dict(cpu.state_dict())
        gpu.to(dev)
        x = torch.randn(16 if tiny else 1024, *shape, generator=g)
        with torch.inference_mode():
            gpu(x[:2].to(dev))
            got, s = _timed(functools.partial(_forward_cpu, gpu, x, dev), dev)
            ref = cpu(x[:4])
        rel = float((got[:4] - ref).norm() / ref.norm().clamp_min(1e-12))
        rows.append(
            {
                "check": f"audio CNN {name}",
                "work": f"{len(x)} x {list(shape)}",
                "seconds": s,
                "vs CPU": f"relative L2 {rel:.2e}",
                "tolerance": "1e-3",
                "ok": rel <= 1e-3,
            }
        )
    return rows


def check_fusion(dev: torch.device, tiny: bool, tmp: Path) -> list[dict[str, Any]]:
    """Aff-Wild2-scale frame task: device-resident vs per-sample loader epochs (``avemo.bench.fusion``),
    then the same steps trained on the device and on the CPU from one initialisation."""
    frames = 20_000 if tiny else 1_000_000
    aw = FB.affwild_like(tmp, n_frames=frames, n_videos=20 if tiny else 200)
    cfg = FB.affwild_frame_config(aw, "gpu_check_affwild", dev)
    rows = []
    for r in FB.bench_scale(
        f"Aff-Wild2-like ({frames / 1e6:.2g} M frames)",
        aw,
        dict(cfg),
        dev,
        10 if tiny else 100,
        1 if tiny else 2,
    ):
        rows.append(
            {
                "check": f"fusion {r['measure']}: device-resident vs per-sample",
                "work": r["scale"],
                "seconds": r["device-resident s/epoch"],
                "vs CPU": f"per-sample {r['per-sample s/epoch']} s/epoch ({r['speed-up (wall)']})",
                "tolerance": "-",
                "ok": True,
            }
        )
    losses = {}
    for d in (dev, torch.device("cpu")):
        c = load_config(dict(cfg, trainer={"accelerator": "gpu" if d.type == "cuda" else "cpu"}))
        dm = build_datamodule(c, str(d), feature_cache={})
        torch.manual_seed(0)
        model = build_model(c, dm).to(d)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        seen = []
        for i, b in enumerate(dm.batches("train", 32)):
            out = model({k: v for k, v in b.items() if k == "face" or k == "face_mask"})
            m = b["y_mask"].float() if "y_mask" in b else torch.ones_like(out)
            loss = (((out - b["y"].nan_to_num()) ** 2) * m).sum() / m.sum().clamp_min(1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen.append(loss.item())
            if i == 19:
                break
        losses[d.type] = np.array(seen)
    diff = float(
        np.abs(losses[dev.type] - losses["cpu"]).max() / max(np.abs(losses["cpu"]).max(), 1e-12)
    )
    rows.append(
        {
            "check": "fusion training steps, device vs CPU",
            "work": "20 Adam steps, same init + batches",
            "seconds": float("nan"),
            "vs CPU": f"loss curve max rel diff {diff:.2e}",
            "tolerance": "1e-3",
            "ok": diff <= 1e-3,
        }
    )
    return rows


def check_stacked(dev: torch.device, tiny: bool, tmp: Path) -> dict[str, Any]:
    data = FB.afew_like(tmp, n_clips=80 if tiny else 773, dim=64 if tiny else 512)
    res = {}
    times = {}
    for d in (dev, torch.device("cpu")):
        cfgs = [
            load_config(
                {
                    "name": "gpu_check_stacked",
                    "seed": s,
                    "data": {
                        "manifest": str(data["manifest"]),
                        "batch_size": 32,
                        "features": {k: str(v) for k, v in data["features"].items()},
                    },
                    "task": {"type": "clip"},
                    "model": {
                        "name": "zhou",
                        "temporal": {"name": "fan_self", "dropout": 0.0},
                        "fusion": "concat",
                    },
                    "trainer": {
                        "accelerator": "gpu" if d.type == "cuda" else "cpu",
                        "max_epochs": 2,
                        "early_stopping": None,
                    },
                    "output": {"plots": False, "verbose": False},
                }
            )
            for s in range(4 if tiny else 8)
        ]
        dm = build_datamodule(cfgs[0], str(d), feature_cache={})
        dirs = [tmp / f"stacked-{d.type}" / f"seed{s}" for s in range(len(cfgs))]
        out, times[d.type] = _timed(
            functools.partial(fit_stacked, cfgs, dm, dirs, verbose=False), d
        )
        res[d.type] = np.array([[r["metrics"][k] for k in sorted(r["metrics"])] for r in out])
    diff = float(np.abs(res[dev.type] - res["cpu"]).max())
    return {
        "check": f"stacked grid ({len(res['cpu'])} seeds, zhou)",
        "work": "2 epochs, one stacked model",
        "seconds": times[dev.type],
        "vs CPU": f"CPU {times['cpu']:.1f} s; val metrics max |diff| {diff:.3f}",
        "tolerance": "0.05",
        "ok": diff <= 0.05,
    }


def run(device: str, tiny: bool, write: bool = True) -> tuple[list[dict[str, Any]], bool]:
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 paths compare with the CPU's fp32
        torch.backends.cudnn.allow_tf32 = False
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="avemo-gpu-check-") as td:
        tmp = Path(td)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("detection", lambda: check_detection(dev, tiny)),
            ("backbones", lambda: check_backbones(dev, tiny)),
            ("audio", lambda: check_audio(dev, tiny)),
            ("fusion", lambda: check_fusion(dev, tiny, tmp / "fusion")),
            ("stacked", lambda: check_stacked(dev, tiny, tmp / "stacked")),
        ]
        for name, fn in steps:
            (tmp / "fusion").mkdir(exist_ok=True)
            (tmp / "stacked").mkdir(exist_ok=True)
            t0 = time.perf_counter()
            try:
                got = fn()
            except Exception as e:  # noqa: BLE001 - one broken path must not hide the others
                traceback.print_exc()
                got = {
                    "check": name,
                    "work": "-",
                    "seconds": float("nan"),
                    "vs CPU": f"FAILED: {type(e).__name__}: {str(e)[:120]}",
                    "tolerance": "-",
                    "ok": False,
                }
            for r in got if isinstance(got, list) else [got]:
                r = {
                    "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                    **r,
                }
                r["ok"] = "yes" if r["ok"] else "NO"
                rows.append(r)
                print(r, flush=True)
            print(f"[gpu-check] {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    ok = all(r["ok"] == "yes" for r in rows)
    if write:
        notes = (
            "Each path once on the device, the same inputs on the CPU (tf32 off; bf16 paths compared "
            "by cosine similarity). Inputs: BlazeFace/MTCNN frames from the cached single_face.jpg; "
            "audio CNN inputs are seeded noise (a numerics check, not a feature check); fusion data "
            "generated (avemo.bench.fusion). "
            + ("TINY dry run. " if tiny else "")
            + "Reproduce: `make gpu-check` (python -m avemo.workflows.gpu_check)."
        )
        write_section(TITLE + (" (tiny)" if tiny else ""), rows, notes)
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m avemo.workflows.gpu_check", description=__doc__.split("\n")[0]
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (dry mode)")
    p.add_argument(
        "--tiny", action="store_true", help="small sizes (the CPU dry mode of the tests)"
    )
    p.add_argument(
        "--no-write", action="store_true", help="do not write rows into the benchmark file"
    )
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "gpu-check: no CUDA device on this machine; nothing measured (exit 3). "
            "`python -m avemo.workflows.gpu_check --device cpu --tiny` runs the script on the CPU."
        )
        return NO_CUDA
    torch.manual_seed(0)
    _, ok = run(a.device, a.tiny, write=not a.no_write)
    print(
        "gpu-check: all paths agree with the CPU" if ok else "gpu-check: a path FAILED (see rows)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
