"""Stage two: cached-feature datamodule, model zoo, losses, metrics, training."""
