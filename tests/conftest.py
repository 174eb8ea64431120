"""Shared fixtures: real media from the cache, the shared labelled data, small threads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real labelled data not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def slow_writes() -> Callable[[float], dict[str, str]]:
    """``slow_writes(seconds)`` -> environment entries that make the store stall that long inside
    every file write, while its ``.tmp`` is half written, so a kill test can hit that window in a
    child process; outputs are unchanged. (The store reads them at each write, not at import.)"""
    from avemo.data.store.files import SLOW_WRITE_ENV

    def env(seconds: float) -> dict[str, str]:
        return {SLOW_WRITE_ENV: str(seconds)}

    return env


@pytest.fixture(scope="session")
def media():
    """``media(name)`` -> path of a real media file from the cache (fetched at `make setup`)."""
    from avemo.data.assets import media as fetch

    return fetch


@pytest.fixture(scope="module")
def extract_one_thread():
    """Every extract plugin registered and torch on one thread for the module (face tests)."""
    from avemo.extract.registry import load_all

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    load_all()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def extract_calls(monkeypatch):
    """``extract_calls(cls)`` -> a list that gets ``len(clips)`` of every later ``cls.extract`` call."""

    def spy(cls: type) -> list[int]:
        calls: list[int] = []
        orig = cls.extract

        def extract(self, clips):  # noqa: ANN001, ANN202
            calls.append(len(clips))
            return orig(self, clips)

        monkeypatch.setattr(cls, "extract", extract)
        return calls

    return spy


@pytest.fixture(scope="module")
def fer_inline(extract_one_thread):
    """The default face feature set with video decoded inline (no decode worker processes)."""
    from avemo.extract.registry import FEATURE_SETS

    fs = FEATURE_SETS.build("face_fer2013", {}, "cpu")
    fs.workers = 0
    yield fs
    fs.close()
