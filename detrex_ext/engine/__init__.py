"""Launcher, trainer and hooks (detectron2/detrex engine names)."""
