"""Model-agnostic modeling pieces: matcher, losses, backbones."""
