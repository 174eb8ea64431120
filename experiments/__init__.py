"""Experiments built on avemo's public API (not installed with the package)."""
