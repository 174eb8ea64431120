"""Real footage the benches read, outside the repository: paths relative to the working
directory (the repository root under ``make bench``) or from the environment, never from
``__file__``."""

from __future__ import annotations

from pathlib import Path

from avemo import settings


def ravdess_a05() -> Path:
    """RAVDESS actor 05 (``video/*.mp4``): ``$AVEMO_RAVDESS_A05``, else
    ``../shared/data/ravdess-a05`` (read when a bench runs, not at import)."""
    return settings.current().ravdess_a05


def emodb() -> Path:
    """EmoDB (``wav/`` + ``labels.csv``): ``$AVEMO_EMODB``, else ``../shared/data/emodb-8spk``."""
    return settings.current().emodb
