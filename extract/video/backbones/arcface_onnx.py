"""insightface's ArcFace recognition ONNX (buffalo_l ``w600k_r50.onnx``) run with onnxruntime.

The model pack cannot be redistributed or fetched here: the user has it on disk, in insightface's
usual place (``~/.insightface/models/buffalo_l/``, or ``$INSIGHTFACE_HOME/models/...``) or at a
path given as ``weights`` (the .onnx file or the model-pack folder). Input as insightface feeds
it: RGB, (x - 127.5) / 127.5, NCHW, 112x112; output the 512-d (unnormalised) embedding.

onnxruntime silently runs on CPU when the CUDA provider is missing (a known complaint), so a
CUDA request that ends on CPU is reported loudly.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from avemo import settings
from avemo.extract.registry import BACKBONES
from avemo.extract.video.backbones.base import FaceBackbone, file_sha256
from avemo.extract.weights import MissingWeightsError, WeightSpec, register_weight, resolve

log = logging.getLogger(__name__)

WEIGHT = register_weight(
    WeightSpec(
        name="arcface_w600k_r50",
        filename="w600k_r50.onnx",
        licence="insightface model packs: non-commercial research use",
        note=(
            "It is part of insightface's buffalo_l model pack (buffalo_l.zip from the insightface "
            "GitHub releases, v0.7): unzip it into ~/.insightface/models/buffalo_l/ (found "
            "automatically) or pass weights=<path to w600k_r50.onnx or the buffalo_l folder>."
        ),
    )
)


def insightface_model_dirs(pack: str = "buffalo_l") -> list[Path]:
    """Where insightface keeps model packs (its own default first)."""
    roots = [os.environ.get("INSIGHTFACE_HOME"), "~/.insightface"]
    return [Path(r).expanduser() / "models" / pack for r in roots if r]


def find_onnx(weights: str | os.PathLike[str] | None, filename: str = WEIGHT.filename) -> Path:
    """User path (file or model-pack folder) > AVEMO_WEIGHTS_* > insightface's folder > cache."""
    if weights is not None:
        p = Path(weights).expanduser()
        if p.is_dir():
            p = p / filename
        if not p.exists():
            raise MissingWeightsError(f"weights for arcface_r50: {p} does not exist. {WEIGHT.note}")
        return p
    if settings.current().weights_override(WEIGHT.env_var) is None:
        for d in insightface_model_dirs():
            if (d / filename).exists():
                return d / filename
    return Path(resolve(WEIGHT.name))


def loud(msg: str) -> None:
    """A warning nobody scrolls past: Python warning + log line, framed."""
    bar = "!" * 78
    log.warning("\n%s\n%s\n%s", bar, msg, bar)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


@BACKBONES.register("arcface_r50")
class ArcFaceR50(FaceBackbone):
    """insightface ArcFace ResNet-50 (WebFace600K) ONNX, 112x112 RGB -> 512-d; user model pack."""

    face_set = "arcface"  # its feature set is face_arcface (the name existing files carry)

    grayscale = False
    align_margin = 0.0  # trained on the 112 ArcFace template crops exactly
    tap = "ONNX graph output (fc1 + BN embedding, before L2 normalisation)"

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        self.weights_path = find_onnx(weights)
        self.batch_size = int(batch_size)
        want_cuda = torch.device(device).type == "cuda"
        providers = ["CPUExecutionProvider"]
        if want_cuda:
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                loud(
                    "arcface_r50: --device cuda requested but this onnxruntime has no CUDA provider "
                    f"(available: {ort.get_available_providers()}); ArcFace RUNS ON CPU. Install "
                    "onnxruntime-gpu matching your CUDA to use the GPU."
                )
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(
            str(self.weights_path), sess_options=opts, providers=providers
        )
        if (
            want_cuda
            and "CUDAExecutionProvider" in providers
            and self.session.get_providers()[0] != "CUDAExecutionProvider"
        ):
            loud(
                f"arcface_r50: onnxruntime could not start the CUDA provider (got {self.session.get_providers()}); "
                "ArcFace RUNS ON CPU."
            )
        self.providers = self.session.get_providers()
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        shape = inp.shape
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(
                f"arcface_r50: {self.weights_path} input {inp.name} has shape {shape}, expected [N, 3, S, S]"
            )
        self.input_name = inp.name
        self.input_size = int(shape[2]) if isinstance(shape[2], int) else 112
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        dim = out.shape[-1]
        self.out_dim = (
            int(dim)
            if isinstance(dim, int)
            else int(
                self._run(np.zeros((1, 3, self.input_size, self.input_size), np.float32)).shape[1]
            )
        )

    def weights_info(self) -> dict[str, str]:
        return {WEIGHT.name: file_sha256(self.weights_path)}

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch:  # exported with a static batch: feed it piecewise
            b = self.fixed_batch
            parts = []
            for i in range(0, len(x), b):
                chunk = x[i : i + b]
                pad = b - len(chunk)
                if pad:
                    chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
                parts.append(self.session.run(None, {self.input_name: chunk})[0][: b - pad])
            return np.concatenate(parts)
        return self.session.run(None, {self.input_name: x})[0]

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        crops = self.check_crops(crops)
        if len(crops) == 0:
            return torch.zeros((0, self.out_dim), dtype=torch.float32)
        outs = []
        for i in range(0, len(crops), self.batch_size):
            x = (
                crops[i : i + self.batch_size]
                .cpu()
                .numpy()
                .transpose(0, 3, 1, 2)
                .astype(np.float32)
            )
            x = (x - 127.5) / 127.5
            outs.append(
                np.asarray(self._run(np.ascontiguousarray(x)), np.float32).reshape(len(x), -1)
            )
        return torch.from_numpy(np.concatenate(outs))
