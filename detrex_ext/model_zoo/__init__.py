"""Released checkpoints by name: configs, URLs, cached verified downloads."""
