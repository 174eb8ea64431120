"""R(2+1)D-18 (Tran et al. 2018; torchvision's architecture) as a clip backbone: 512-d per window.

Weights: the user's fine-tuned checkpoint as a state dict (``backbone_weights`` or
``AVEMO_WEIGHTS_R2PLUS1D_18_KINETICS``), else torchvision's Kinetics-400 file
(``r2plus1d_18-91a641e6.pth``: the avemo cache, then torch hub's cache, then its canonical URL
only when ``AVEMO_ALLOW_DOWNLOAD=1``). Files are read with ``torch.load(weights_only=True)``;
the classifier (``fc.*``) is not used (the tap is the pooled 512-d vector before it), so a
checkpoint fine-tuned with another head loads too.

Input: uint8 RGB face crops ``[B, T, S, S, 3]``, scaled to 0..1 and normalised with the
Kinetics mean/std torchvision's video presets use.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avemo import settings
from avemo.devices import resolve_device
from avemo.extract.registry import CLIP_BACKBONES
from avemo.extract.video.backbones.base import (
    file_sha256,
    load_into,
    load_state_dict_file,
)
from avemo.extract.weights import MissingWeightsError, WeightSpec, register_weight, resolve

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

WEIGHT = register_weight(
    WeightSpec(
        name="r2plus1d_18_kinetics",
        filename="r2plus1d_18-91a641e6.pth",
        sha256=None,  # torchvision names the file by its sha256 prefix 91a641e6 (checked on load)
        url="https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth",
        licence="torchvision Kinetics-400 weights (BSD-3 code; Kinetics data terms apply)",
        note=(
            "Online: torch.save(torchvision.models.video.r2plus1d_18(weights='KINETICS400_V1')"
            ".state_dict(), 'r2plus1d_18.pth') and pass backbone_weights='r2plus1d_18.pth' "
            "(or your fine-tuned state dict)."
        ),
    )
)
SHA_PREFIX = "91a641e6"


def _weights_path(weights: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """(path, is the canonical Kinetics file); torch hub's cache is looked at too."""
    user = settings.current().weights_override(WEIGHT.env_var)
    if weights is None and user is None:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHT.filename
        if hub.is_file():
            return hub, True
    try:
        return resolve(WEIGHT.name, weights), weights is None and user is None
    except MissingWeightsError as e:
        raise MissingWeightsError(f"clip backbone r2plus1d_18: {e}") from None


@CLIP_BACKBONES.register("r2plus1d_18")
class R2Plus1D18:
    """torchvision ``r2plus1d_18`` without its classifier: ``embed(uint8 [B, T, S, S, 3]) -> [B, 512]``."""

    out_dim = 512
    input_size = 112

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        batch_size: int = 8,
    ) -> None:
        from torchvision.models.video import r2plus1d_18

        self.device = resolve_device(device, "r2plus1d_18")
        self.batch_size = max(1, int(batch_size))
        self.weights_path, canonical = _weights_path(weights)
        if canonical and not file_sha256(self.weights_path).startswith(SHA_PREFIX):
            raise MissingWeightsError(
                f"{self.weights_path} is not torchvision's {WEIGHT.filename} "
                f"(sha256 does not start with {SHA_PREFIX})"
            )
        net = r2plus1d_18(weights=None)
        net.fc = nn.Identity()
        load_into(
            net,
            load_state_dict_file(self.weights_path, "r2plus1d_18"),
            "r2plus1d_18",
            self.weights_path,
            ignore_prefixes=("fc.",),
            strip_prefixes=("module.", "backbone."),
        )
        self.net = net.eval().to(self.device)
        self.mean = torch.tensor(KINETICS_MEAN, device=self.device).view(1, 3, 1, 1, 1)
        self.std = torch.tensor(KINETICS_STD, device=self.device).view(1, 3, 1, 1, 1)

    def weights_info(self) -> dict[str, str]:
        return {
            WEIGHT.name
            if self.weights_path.name == WEIGHT.filename
            else "r2plus1d_18_user": file_sha256(self.weights_path)
        }

    @torch.inference_mode()
    def embed(self, clips: np.ndarray) -> np.ndarray:
        """Pooled features ``[B, 512]`` float32 of uint8 RGB windows ``[B, T, S, S, 3]``."""
        out = []
        for i in range(0, len(clips), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(clips[i : i + self.batch_size])).to(
                self.device
            )
            x = x.permute(0, 4, 1, 2, 3).float().div_(255.0)  # [B, 3, T, S, S]
            out.append(self.net((x - self.mean) / self.std).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.out_dim), np.float32)
