"""Lazy configs: LazyCall, LazyConfig, instantiate, get_config (detectron2/detrex names)."""
