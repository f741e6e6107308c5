"""What a probe backbone is: an :class:`~.base.Embedder` (pixels in, one vector per image out).

The implementations live in :mod:`dermbench.models.frameworks` (timm, hf, open_clip, tf, handcrafted).
"""
