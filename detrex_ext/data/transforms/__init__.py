"""Augmentations and transforms (detectron2's T namespace)."""
