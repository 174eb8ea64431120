"""The one device rule of both stages (``--device``, ``trainer.accelerator``, ``AVEMO_DEVICE``).

``auto`` / None: the first GPU when there is one, else the CPU; ``cpu``; ``cuda`` / ``gpu`` /
``cuda:N``: that GPU, or -- when no CUDA GPU is visible -- the CPU with a
``DeviceFallbackWarning`` (a config or command written on a GPU machine still runs on a laptop,
and says so). An index past the visible GPUs, or any other word, is the user's to fix
(``UsageError``). Stage one (feature sets, face backbones) and stage two (training, prediction)
both go through ``resolve_device``, so one ``--device`` means the same everywhere.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from avemo.errors import UsageError

if TYPE_CHECKING:
    import torch

#: The words ``resolve_device`` accepts (``cuda:N`` with N a visible GPU's index).
DEVICE_WORDS = ("auto", "cpu", "cuda", "cuda:N", "gpu")


class DeviceFallbackWarning(UserWarning):
    """A GPU was asked for where none is visible: the work runs on the CPU instead."""


def resolve_device(device: str | torch.device | None, who: str = "") -> torch.device:
    """The device ``device`` names here (see the module docstring); ``who`` prefixes the
    fallback warning (``face_crops: device 'cuda' asks for a GPU ...``)."""
    import torch  # heavy: only where a device is resolved, not at `avemo list`

    d = str(device or "auto").strip().lower()  # a torch.device too: "cuda:1"
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if d == "gpu":
        d = "cuda"
    try:
        dev = torch.device(d)
    except RuntimeError:
        dev = None
    if dev is None or dev.type != "cuda":
        raise UsageError(f"device must be auto, cpu, cuda, cuda:N or gpu, got {device!r}")
    if not torch.cuda.is_available():
        warnings.warn(
            f"{who + ': ' if who else ''}device {str(device)!r} asks for a GPU but no CUDA GPU is "
            "visible here: running on the CPU",
            DeviceFallbackWarning,
            stacklevel=2,
        )
        return torch.device("cpu")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
            f"GPU(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
        )
    return dev


__all__ = ["DEVICE_WORDS", "DeviceFallbackWarning", "resolve_device"]
