"""The contract between the extraction runner and every feature set."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from avemo.data.store import ClipFeatures, make_provenance


@dataclass(frozen=True)
class ClipInput:
    """One manifest row as the extractors see it."""

    clip_id: str
    video: str | None = None
    audio: str | None = None


class FeatureSet(ABC):
    """A named extractor whose output is one HDF5 feature file.

    Subclasses declare ``default_config`` (every parameter that changes the numbers: it is
    recorded in provenance and hashed) and implement ``extract``, which must yield exactly one
    ``ClipFeatures`` per input clip and never raise for a bad clip (status ``error`` instead).
    """

    name: ClassVar[str] = ""
    modality: ClassVar[str] = "video"  # which manifest column the set reads: "video" or "audio"
    default_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Mapping[str, Any] | None = None, device: str = "cpu") -> None:
        unknown = set(config or {}) - set(self.default_config)
        if unknown:
            raise ValueError(
                f"feature set {self.name!r}: unknown config keys {sorted(unknown)}; "
                f"known: {sorted(self.default_config)}"
            )
        self.config: dict[str, Any] = {**self.default_config, **dict(config or {})}
        self.device = device

    def weights(self) -> dict[str, str]:
        """Weight name -> sha256 of every pretrained file used (recorded in provenance)."""
        return {}

    @property
    def rate_hz(self) -> float | None:
        """Nominal rows per second (None when rows follow the video's own frames)."""
        return None

    def provenance(self) -> dict[str, Any]:
        return make_provenance(self.name, self.config, self.weights(), self.rate_hz, _versions())

    @abstractmethod
    def extract(self, clips: Sequence[ClipInput]) -> Iterator[ClipFeatures]:
        """Yield one result per clip (any order)."""


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "torchvision", "av", "librosa", "numpy", "onnxruntime", "opencv-python-headless", "h5py"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
