"""Clip-level paralinguistic functionals from openSMILE: ``compare_functionals``, ``egemaps_functionals``.

The standard speech-emotion baseline features (ComParE-2016: 6 373 statistics of 65 LLDs and
their deltas; eGeMAPS v02: 88), one row per clip, so stage two can use them beside learned or
frame-level streams (``descriptors`` with ``per_modality_stats: {func: [mean]}`` passes the row
through) and speaker-normalise them like any stream. openSMILE runs on the decoded signal at
``sample_rate`` (16 kHz); the row's time stamp is the clip's centre. A NaN / inf value is
written as 0. Research-only licence: the ``[smile]`` extra, as for the LLD sets.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from avemo.extract.audio.common import Result
from avemo.extract.audio.opensmile_lld import SmileSet
from avemo.extract.registry import FEATURE_SETS


class _SmileFunctionals(SmileSet):
    """One openSMILE config at functionals level: one row per clip."""

    per_clip: ClassVar[bool] = True

    def __init__(self, config: Any = None, device: str = "cpu", **kw: Any) -> None:
        super().__init__(config, device, **kw)
        self._smile: Any = None

    def _engine(self) -> Any:
        if self._smile is None:
            sm = self._opensmile
            self._smile = sm.Smile(
                feature_set=getattr(sm.FeatureSet, self.smile_set),
                feature_level=sm.FeatureLevel.Functionals,
            )
        return self._smile

    def feature_names(self) -> list[str]:
        """openSMILE's column names, in row order."""
        return list(self._engine().feature_names)

    def _one(self, signal: np.ndarray) -> Result:
        row = self._engine().process_signal(signal, self.sample_rate).to_numpy(np.float32)
        if row.shape != (1, self.n_columns):
            raise RuntimeError(
                f"{self.name}: openSMILE gave {row.shape}, expected (1, {self.n_columns})"
            )
        values = np.nan_to_num(row, nan=0.0, posinf=0.0, neginf=0.0)
        return values, np.array([len(signal) / 2 / self.sample_rate])


@FEATURE_SETS.register("compare_functionals")
class CompareFunctionals(_SmileFunctionals):
    """openSMILE ComParE-2016 functionals: 6373 columns, one row per clip (needs the [smile] extra)."""

    smile_set = "ComParE_2016"
    n_columns = 6373


@FEATURE_SETS.register("egemaps_functionals")
class EgemapsFunctionals(_SmileFunctionals):
    """openSMILE eGeMAPS v02 functionals: 88 columns, one row per clip (needs the [smile] extra)."""

    smile_set = "eGeMAPSv02"
    n_columns = 88
