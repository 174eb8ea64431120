"""Ablation grids, cross-validation, fold merging, reports, benchmarks."""
