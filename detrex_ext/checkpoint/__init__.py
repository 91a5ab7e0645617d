"""Checkpoint loading and saving (DetectionCheckpointer)."""
