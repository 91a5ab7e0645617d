"""Mask DINO: one model for detection, instance, panoptic and semantic segmentation."""
