"""Pitch and voicing as a feature set: ``pitch_swiftf0`` (swift-f0 0.3.0, MIT, ONNX in the wheel).

swift-f0's small CNN gives a pitch and a voicing confidence every 256 samples at 16 kHz (16 ms,
62.5 Hz), plus the level of the 32 ms centred on each frame. Rows ``[4]`` with time stamp
``0.016 k`` (the frame centre):

0. ``f0_st``: pitch in semitones above 27.5 Hz (eGeMAPS' scale), taken where the frame is
   voiced and linearly interpolated across unvoiced frames (held at the clip's edges), so
   statistics over a clip describe its pitch contour, not the unvoiced frames; a clip with no
   voiced frame gives 0.
1. ``confidence``: swift-f0's voicing confidence, 0..1 (frames whose audio peaks below 1e-3
   get 0, as swift-f0 does).
2. ``voiced``: 1 where ``confidence >= voicing_threshold`` (0.5, swift-f0's calibration), else 0.
3. ``loudness_db``: level of the 32 ms around the frame, dB re full scale (floor -140 dB).

``fmin`` / ``fmax`` bound the pitch search (Hz; default 60-500, adult speech).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from avemo.errors import FeatureConfigError
from avemo.extract.audio.common import AudioFeatureSet, Result
from avemo.extract.base import Param
from avemo.extract.registry import FEATURE_SETS

A0_HZ = 27.5  # semitone reference, as eGeMAPS


def interpolate_unvoiced(f0_st: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """``f0_st`` with unvoiced frames linearly interpolated between voiced ones (edges held);
    all zeros when no frame is voiced."""
    idx = np.flatnonzero(voiced)
    if len(idx) == 0:
        return np.zeros_like(f0_st)
    return np.interp(np.arange(len(f0_st)), idx, f0_st[idx]).astype(f0_st.dtype)


@FEATURE_SETS.register("pitch_swiftf0")
class PitchSwiftF0(AudioFeatureSet):
    """swift-f0 pitch + voicing: [f0 semitones (interpolated), confidence, voiced, loudness dB] at 62.5 Hz."""

    default_config: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000,
        "fmin": 60.0,
        "fmax": 500.0,
        "voicing_threshold": 0.5,
        "threads": 1,
    }
    config_params: ClassVar[dict[str, Param]] = {
        "sample_rate": Param(choices=(16000,)),
        "fmin": Param(min=46.875, max=2093.75),
        "fmax": Param(min=46.875, max=2093.75),
        "voicing_threshold": Param(min=0, max=1),
        "threads": Param(min=1, max=64),
    }

    def __init__(self, config: Any = None, device: str = "cpu", **kw: Any) -> None:
        super().__init__(config, device, **kw)
        self._detector: Any = None

    def validate(self) -> None:
        super().validate()
        if float(self.config["fmax"]) <= float(self.config["fmin"]) * 1.05:
            raise FeatureConfigError(
                f"{self.name}: fmax ({self.config['fmax']}) must be above fmin "
                f"({self.config['fmin']}) by at least 5 %"
            )

    @property
    def rate_hz(self) -> float:
        return 16000 / 256

    def row_shape(self) -> tuple[int, ...]:
        return (4,)

    def weights(self) -> dict[str, str]:
        import hashlib
        from importlib.resources import files

        data = files("swift_f0").joinpath("model.onnx").read_bytes()
        return {"swift_f0-0.3.0/model.onnx": hashlib.sha256(data).hexdigest()}

    def detector(self) -> Any:
        if self._detector is None:
            try:
                import swift_f0
            except ImportError:
                raise FeatureConfigError(
                    f"feature set {self.name} needs swift-f0: pip install swift-f0==0.3.0"
                ) from None
            # spin=False: the ONNX pool sleeps between clips instead of busy-waiting (shared CPUs)
            self._detector = swift_f0.SwiftF0(threads=int(self.config["threads"]), spin=False)
        return self._detector

    def _one(self, signal: np.ndarray) -> Result:
        c = self.config
        r = self.detector().detect(signal, self.sample_rate, float(c["fmin"]), float(c["fmax"]))
        voiced = r.confidence >= float(c["voicing_threshold"])
        st = 12.0 * np.log2(np.maximum(r.pitch_hz, 1e-3) / A0_HZ)
        rows = np.stack(
            [
                interpolate_unvoiced(st, voiced),
                r.confidence,
                voiced.astype(np.float64),
                np.maximum(r.loudness_db, -140.0),
            ],
            1,
        ).astype(np.float32)
        return rows, r.timestamps

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        return [self._one(np.asarray(s, np.float32)) for s in signals]
