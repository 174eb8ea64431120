"""Moved to ``avemo.bench.table``; kept only until the last benches that import it move there."""

from avemo.bench.table import RESULTS_DIR, machine, write_section  # noqa: F401
