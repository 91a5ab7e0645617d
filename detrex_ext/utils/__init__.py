"""Utilities shared by every layer of the toolkit: distributed helpers, logging, events, file I/O."""
