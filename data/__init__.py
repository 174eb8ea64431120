"""What the data is and where it lives: manifests, adapters, demo corpus, feature store."""
