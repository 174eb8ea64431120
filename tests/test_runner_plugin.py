"""A tiny, test-only feature set (``test_wavstats``) registered through ``AVEMO_PLUGINS``.

Real decoding (soundfile) and real numbers (per-hop RMS, peak, zero-crossing rate, mean), cheap
enough to extract hundreds of clips in a test. Also the tests of the plugin hook itself.
Subprocesses get it with ``PYTHONPATH=tests AVEMO_PLUGINS=test_runner_plugin``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from avemo.data.store import ClipFeatures
from avemo.extract.base import ClipInput, FeatureSet
from avemo.extract.registry import FEATURE_SETS

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CALLS: list[str] = []  # clip ids this process extracted (resume tests count them)
INTERRUPT_AFTER = [-1]  # >= 0: raise Interrupt once this many clips were extracted (not config:
# the crash must not change the provenance)


class Interrupt(BaseException):
    """What the crash-simulating config raises: not an Exception, so nothing isolates it."""


if "test_wavstats" not in FEATURE_SETS:

    @FEATURE_SETS.register("test_wavstats")
    class WavStats(FeatureSet):
        """Test-only: per-hop RMS / peak / ZCR / mean of a wav file (raises on unreadable files)."""

        modality = "audio"
        default_config = {"hop_s": 0.01, "sleep_s": 0.0, "dtype": "float32"}

        @property
        def rate_hz(self) -> float:
            return 1.0 / self.config["hop_s"]

        def extract(self, clips: Sequence[ClipInput]) -> Iterator[ClipFeatures]:
            import soundfile as sf

            for clip in clips:
                if 0 <= INTERRUPT_AFTER[0] <= len(CALLS):
                    raise Interrupt(f"simulated crash before {clip.clip_id}")
                CALLS.append(clip.clip_id)
                if self.config["sleep_s"]:
                    time.sleep(self.config["sleep_s"])
                if clip.audio is None:
                    yield ClipFeatures.empty(clip.clip_id, (4,), "no_audio", "no audio path")
                    continue
                x, sr = sf.read(clip.audio, dtype="float32", always_2d=True)  # raises on junk
                x = x.mean(axis=1)
                hop = max(1, int(round(self.config["hop_s"] * sr)))
                n = len(x) // hop
                if n == 0:
                    yield ClipFeatures.empty(clip.clip_id, (4,), "no_audio", "shorter than one hop")
                    continue
                fr = x[: n * hop].reshape(n, hop)
                zcr = (np.diff(np.signbit(fr), axis=1) != 0).mean(axis=1)
                vals = np.stack([np.sqrt((fr**2).mean(1)), np.abs(fr).max(1), zcr, fr.mean(1)], 1)
                yield ClipFeatures(
                    clip.clip_id,
                    vals.astype(self.config["dtype"]),
                    (np.arange(n) * hop) / sr,
                    np.abs(fr).max(1) > 1e-4,
                )


def make_wav_corpus(
    root: Path,
    n: int = 40,
    broken: tuple[int, ...] = (7, 23),
    seed: int = 0,
    min_s: float = 0.05,
    max_s: float = 1.2,
) -> Path:
    """``n`` short 16 kHz wav clips of random lengths (one silent, one empty), junk bytes at the
    ``broken`` indices; returns the manifest (clip_id, audio, split, subject, label)."""
    import pandas as pd
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = root / f"clip{i:03d}.wav"
        if i in broken:
            path.write_bytes(b"RIFF\x00\x01junk, not a wav file" + rng.bytes(64))
        else:
            sr = 16000
            t = 0 if i == 3 else int(rng.uniform(min_s, max_s) * sr)
            x = (
                0.3 * np.sin(2 * np.pi * rng.uniform(100, 900) * np.arange(t) / sr)
                + 0.05 * rng.standard_normal(t)
            ) * (i != 5)
            sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
        rows.append(
            {
                "clip_id": f"c{i:03d}",
                "audio": str(path),
                "split": "train",
                "subject": f"s{i % 4}",
                "label": ["neutral", "happy"][i % 2],
            }
        )
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def plugin_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess that should see ``test_wavstats``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    plugins = [p for p in env.get("AVEMO_PLUGINS", "").split(",") if p]
    env["AVEMO_PLUGINS"] = ",".join(dict.fromkeys([*plugins, "test_runner_plugin"]))
    env.update(extra)
    return env


def test_plugin_env_var_registers_feature_set(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_avemo_plugin.py").write_text(
        "from avemo.extract.registry import FEATURE_SETS\n"
        "@FEATURE_SETS.register('my_plugin_set')\n"
        "class MySet:\n"
        '    """A user\'s own feature set."""\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AVEMO_PLUGINS", "my_avemo_plugin")
    from avemo.extract.registry import FEATURE_SETS, load_for

    assert "my_plugin_set" not in FEATURE_SETS
    load_for(["my_plugin_set"])
    assert dict(FEATURE_SETS.describe())["my_plugin_set"] == "A user's own feature set."


def test_missing_plugin_module_is_an_error(monkeypatch) -> None:
    import pytest

    from avemo.extract.registry import load_all

    monkeypatch.setenv("AVEMO_PLUGINS", "no_such_avemo_plugin_module")
    with pytest.raises(ModuleNotFoundError, match="no_such_avemo_plugin_module"):
        load_all()
