"""Backbones that return {name: feature map} and describe themselves with output_shape()."""
