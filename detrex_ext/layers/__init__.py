"""Reusable layers for DETR-family models (deformable attention, embeddings, box ops)."""
