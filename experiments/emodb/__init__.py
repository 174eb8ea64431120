"""The EmoDB studies: one speaker-fold SVM baseline, grid YAML files, one runner (run.py)."""
