"""Datasets, catalogs, augmentation, mappers and loaders (detectron2 names)."""
