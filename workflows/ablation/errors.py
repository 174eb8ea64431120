"""What can stop a grid: each kind of mistake or failure is its own exception type."""

from __future__ import annotations

from collections.abc import Mapping

from avemo.fusion.config import ConfigError


class GridError(ConfigError):
    """A grid that cannot run (bad YAML, unknown axis form, features missing with on_missing=error)."""


class InvalidCellsError(GridError):
    """Cells whose run config does not validate: a mistake in the grid or its base, so no cell
    runs (``--dry-run`` included). ``invalid``: cell id -> the config's own error."""

    def __init__(self, invalid: Mapping[str, ConfigError], total: int) -> None:
        self.invalid = dict(invalid)
        self.total = total
        first = next(iter(self.invalid))
        super().__init__(
            f"{len(self.invalid)} of {total} cell(s) have an invalid config, e.g. cell {first}: "
            f"{self.invalid[first]}"
        )


class MissingFeaturesError(GridError):
    """Cells whose feature files are not in the cache (or were made with another config), with
    ``on_missing: error``. ``problems``: cell id -> what is missing."""

    def __init__(self, problems: Mapping[str, list[str]], summary: list[str]) -> None:
        self.problems = dict(problems)
        super().__init__(
            f"{len(self.problems)} cell(s) need features not in the cache:\n" + "\n".join(summary)
        )
