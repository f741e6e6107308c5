"""Backbone implementations for the probe paradigm (each imported only when its backbone is used).

Every module exposes a ``build(...) -> Embedder`` factory; :mod:`dermbench.models.backbones`
registers the names users know and points at these factories.
"""
