"""Mask DINO modules: meta-architecture, pixel decoder, decoder, criterion, inference."""
