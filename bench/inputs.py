"""Real footage the benches read, outside the repository: paths relative to the working
directory (the repository root under ``make bench``) or from the environment, never from
``__file__``."""

from __future__ import annotations

import os
from pathlib import Path

#: RAVDESS actor 05 (``video/*.mp4``): ``$AVEMO_RAVDESS_A05``, else ``../shared/data/ravdess-a05``
RAVDESS_A05 = Path(os.environ.get("AVEMO_RAVDESS_A05", "../shared/data/ravdess-a05"))
