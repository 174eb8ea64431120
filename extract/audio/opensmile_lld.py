"""Frame-level paralinguistic descriptors from openSMILE: ``egemaps_lld`` and ``compare_lld``.

The low-level descriptors (LLDs) behind the eGeMAPS v02 and ComParE-2016 functionals, every
10 ms, so stage two can learn its own statistics over them (``fusion.models.model_descriptors``)
instead of the fixed functionals. openSMILE runs on the decoded 16 kHz signal. One row per
whole frame on the 10 ms grid, time stamp = frame centre (``0.01 k + frame_length / 2``):
openSMILE's last frames, cut at the clip's end, repeat or skip a start (differently in the LLD
and delta tables), so rows stop at the first frame that leaves the grid.

* ``egemaps_lld``: ``[25]`` eGeMAPS v02 LLDs (loudness, alpha ratio, Hammarberg index,
  spectral slopes, F0 semitones from 27.5 Hz, jitter, shimmer, HNR, formants F1-F3 and their
  bandwidths / relative amplitudes, MFCC 1-4, spectral flux...), 20 ms frames,
  ``t = 0.01 k + 0.01``: 196 rows for a 2.0 s clip. Unvoiced frames carry 0 in the voiced-only
  LLDs, as openSMILE writes them.
* ``compare_lld``: ``[130]`` = 65 ComParE-2016 LLDs | their 65 deltas (``_sma_de``), 60 ms
  frames, ``t = 0.01 k + 0.03``: 192-195 rows for a 2.0 s clip.

Column names: ``feature_names()`` (openSMILE's own). A NaN/inf openSMILE value (never seen on
EmoDB) is written as 0. opensmile's licence is research-only, so it is an optional extra:
``pip install avemo[smile]``; without it the sets refuse to start with that one message (exit 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from avemo.errors import FeatureConfigError
from avemo.extract.audio.common import AudioFeatureSet, Result
from avemo.extract.registry import FEATURE_SETS

INSTALL_HINT = (
    "needs opensmile, an optional extra (research-only licence): "
    "pip install avemo[smile]  (from a checkout: pip install -e '.[smile]')"
)


def require_opensmile(what: str) -> Any:
    """The ``opensmile`` module, or a FeatureConfigError naming the extra to install."""
    try:
        import opensmile
    except ImportError:
        raise FeatureConfigError(f"feature set {what} {INSTALL_HINT}") from None
    return opensmile


def _by_start(table: Any, step_s: float = 0.01) -> Any:
    """openSMILE's table of whole frames on the 10 ms grid, indexed by frame start: the rows
    from the first one that breaks the grid (openSMILE repeats or skips a start in the last
    frames, differently in the LLD and delta tables) or is cut at the clip's end are dropped.
    ``attrs["frame_s"]`` is the nominal frame length (the median of end - start)."""
    start = table.index.get_level_values("start").total_seconds().to_numpy()
    end = table.index.get_level_values("end").total_seconds().to_numpy()
    frame_s = float(np.median(end - start)) if len(table) else 0.0
    ok = (np.round(start / step_s) == np.arange(len(start))) & (end - start >= frame_s - 1e-6)
    n = len(ok) if ok.all() else int(np.argmin(ok))
    out = table.iloc[:n].set_axis(np.round(start[:n] / step_s).astype(np.int64), axis=0)
    out.attrs["frame_s"] = frame_s
    return out


class SmileSet(AudioFeatureSet):
    """One openSMILE config (``smile_set``) giving ``n_columns`` per row, run clip by clip on the
    decoded signal (``_one``); needs the ``[smile]`` extra."""

    smile_set: ClassVar[str] = ""
    n_columns: ClassVar[int] = 0
    default_config: ClassVar[dict[str, Any]] = {"sample_rate": 16000}

    def __init__(self, config: Any = None, device: str = "cpu", **kw: Any) -> None:
        super().__init__(config, device, **kw)
        self._opensmile = require_opensmile(self.name)

    def row_shape(self) -> tuple[int, ...]:
        return (self.n_columns,)

    def _one(self, signal: np.ndarray) -> Result:
        raise NotImplementedError

    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        return [self._one(np.asarray(s, np.float32)) for s in signals]


class _SmileLld(SmileSet):
    """One openSMILE config at LLD level (plus, optionally, its delta LLDs joined per frame)."""

    with_deltas: ClassVar[bool] = False

    def __init__(self, config: Any = None, device: str = "cpu", **kw: Any) -> None:
        super().__init__(config, device, **kw)
        self._smiles: list[Any] | None = None

    @property
    def rate_hz(self) -> float:
        return 100.0

    def _engines(self) -> list[Any]:
        if self._smiles is None:
            sm = self._opensmile
            levels = [sm.FeatureLevel.LowLevelDescriptors]
            if self.with_deltas:
                levels.append(sm.FeatureLevel.LowLevelDescriptors_Deltas)
            fs = getattr(sm.FeatureSet, self.smile_set)
            self._smiles = [sm.Smile(feature_set=fs, feature_level=lv) for lv in levels]
        return self._smiles

    def feature_names(self) -> list[str]:
        """openSMILE's column names, in row order."""
        return [n for s in self._engines() for n in s.feature_names]

    def _one(self, signal: np.ndarray) -> Result:
        tables = [_by_start(s.process_signal(signal, self.sample_rate)) for s in self._engines()]
        t, frame_s = tables[0], tables[0].attrs["frame_s"]
        for other in tables[1:]:  # the delta table has a frame or two more: join on the frame start
            t = t.join(other, how="inner")
        values = np.nan_to_num(t.to_numpy(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if values.shape[1] != self.n_columns:
            raise RuntimeError(
                f"{self.name}: openSMILE gave {values.shape[1]} columns, expected {self.n_columns}"
            )
        if len(values) == 0:  # shorter than one frame: one zero row at the clip centre
            return np.zeros((1, self.n_columns), np.float32), np.array(
                [len(signal) / 2 / self.sample_rate]
            )
        return values, t.index.to_numpy() * 0.01 + frame_s / 2


@FEATURE_SETS.register("egemaps_lld")
class EgemapsLld(_SmileLld):
    """openSMILE eGeMAPS v02 low-level descriptors: 25 columns at 100 Hz (needs the [smile] extra)."""

    smile_set = "eGeMAPSv02"
    n_columns = 25


@FEATURE_SETS.register("compare_lld")
class CompareLld(_SmileLld):
    """openSMILE ComParE-2016 low-level descriptors + deltas: 130 columns at 100 Hz (needs the [smile] extra)."""

    smile_set = "ComParE_2016"
    with_deltas = True
    n_columns = 130
