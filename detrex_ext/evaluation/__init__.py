"""Evaluators with detectron2's reset/process/evaluate protocol."""
