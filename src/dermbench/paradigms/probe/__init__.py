"""Probe paradigm: frozen backbone -> cached embeddings -> heads."""
