"""Shared fixtures: real media from the cache, the shared labelled data, small threads."""

from __future__ import annotations

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
def media():
    """``media(name)`` -> path of a real media file from the cache (fetched at `make setup`)."""
    from avemo.data.assets import media as fetch

    return fetch
