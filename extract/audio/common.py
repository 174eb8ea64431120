"""What every audio feature set shares: decode a batch of clips, compute, wrap per-clip status.

Subclasses implement ``row_shape`` and ``compute(signals) -> [(values, timestamps), ...]`` on
mono float32 signals at ``config["sample_rate"]``; decoding, ``no_audio`` / ``error``
statuses, the non-finite guard, the all-valid mask and the shift of time stamps onto the
container timeline (``DecodedAudio.start_s``: an audio stream that starts 2.43 s into a
video gets rows stamped from 2.43 s, like that video's frames) live here once.

Status contract: no audio stream, an empty stream, or a clip with no media path ->
``no_audio`` (zero rows); unreadable file -> ``error`` (zero rows, message says why);
silence -> ``ok`` with finite rows (logs are taken of ``x + eps``); a clip shorter than one
analysis window -> ``ok`` with the rows its front-end documents (one zero-padded window).
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from avemo.data.store import ClipFeatures
from avemo.errors import FeatureConfigError
from avemo.extract.audio.decode import DecodedAudio, NoAudioError, clip_source, decode_audio
from avemo.extract.base import ClipInput, FeatureSet, Param

Result = tuple[np.ndarray, np.ndarray]  # (values [T, ...], timestamps [T])


def ms_to_samples(ms: float, sr: int) -> int:
    return int(round(ms * sr / 1000.0))


class AudioFeatureSet(FeatureSet):
    """Base of the audio feature sets: reads ``clip.audio``, else the audio of ``clip.video``.

    ``backend`` chooses the numpy (CPU) or torch path where a set has both; it defaults to
    torch on CUDA devices and numpy otherwise. It is not part of the config (and so not of
    the provenance hash) because both paths give the same numbers within float tolerance.
    """

    modality = "audio"
    default_config: ClassVar[dict[str, Any]] = {"sample_rate": 16000}
    config_params: ClassVar[dict[str, Param]] = {
        "sample_rate": Param(min=1000, max=384000),
        "pad_short": Param(),
        "batch_size": Param(min=1),
    }

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        device: str = "cpu",
        backend: str | None = None,
        decode_workers: int | None = None,
    ) -> None:
        super().__init__(config, device)
        self.backend = backend or ("torch" if str(device).startswith("cuda") else "numpy")
        if self.backend not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'numpy' or 'torch', got {self.backend!r}")
        self.decode_workers = decode_workers or min(4, os.cpu_count() or 1)
        self.validate()

    def validate(self) -> None:
        """Raise FeatureConfigError on an inconsistent config (called at construction).

        Per-key types and ranges are checked before (``config_params``); this is for rules
        that tie keys together.
        """
        if int(self.config["sample_rate"]) <= 0:
            raise FeatureConfigError(f"{self.name}: sample_rate must be positive")

    @property
    def sample_rate(self) -> int:
        return int(self.config["sample_rate"])

    @abstractmethod
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one row (what ``values[t]`` looks like)."""

    @abstractmethod
    def compute(self, signals: Sequence[np.ndarray]) -> list[Result]:
        """Rows and time stamps (window centres, s) for each signal, in order."""

    # ------------------------------------------------------------------ extraction
    def _decode(self, clip: ClipInput) -> ClipFeatures | DecodedAudio:
        try:
            return decode_audio(clip_source(clip.audio, clip.video), self.sample_rate)
        except NoAudioError as e:
            return ClipFeatures.empty(clip.clip_id, self.row_shape(), "no_audio", str(e))
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            return ClipFeatures.empty(
                clip.clip_id, self.row_shape(), "error", f"decode failed: {type(e).__name__}: {e}"
            )

    def _wrap(self, clip: ClipInput, audio: DecodedAudio, res: Result) -> ClipFeatures:
        values, ts = res
        if not np.isfinite(values).all():
            return ClipFeatures.empty(
                clip.clip_id, self.row_shape(), "error", "non-finite values in the output"
            )
        return ClipFeatures(
            clip.clip_id,
            values,
            np.asarray(ts, np.float64) + audio.start_s,
            np.ones(len(values), bool),
        )

    def extract(self, clips: Sequence[ClipInput]) -> Iterator[ClipFeatures]:
        clips = list(clips)
        if len(clips) > 1 and self.decode_workers > 1:
            with ThreadPoolExecutor(self.decode_workers) as pool:
                decoded = list(pool.map(self._decode, clips))
        else:
            decoded = [self._decode(c) for c in clips]
        good = [(c, d) for c, d in zip(clips, decoded, strict=True) if isinstance(d, DecodedAudio)]
        yield from (d for d in decoded if isinstance(d, ClipFeatures))
        if not good:
            return
        try:
            results = self.compute([d.samples for _, d in good])
            pairs = list(zip(good, results, strict=True))
        except Exception:  # noqa: BLE001 - isolate the failing clip by retrying one by one
            pairs = []
            for clip, audio in good:
                try:
                    pairs.append(((clip, audio), self.compute([audio.samples])[0]))
                except Exception as e:  # noqa: BLE001
                    yield ClipFeatures.empty(
                        clip.clip_id, self.row_shape(), "error", f"{type(e).__name__}: {e}"
                    )
        for (clip, audio), res in pairs:
            yield self._wrap(clip, audio, res)
