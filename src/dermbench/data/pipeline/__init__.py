"""The fast image pipeline: decode less, decode once, keep the model fed (PRODUCT §10).

Three layers, each usable alone:

- :mod:`.decode` — :func:`~.decode.load_image`: one image at the working size (reduced-size JPEG
  decoding, then a :class:`~.decode.ResizePolicy`), with its measured tolerance;
- :mod:`.image_cache` — :func:`~.image_cache.build_image_cache`: every image of a dataset decoded
  once into a memory-mapped uint8 array, keyed by everything that changes the pixels;
- :mod:`.loaders` — :func:`~.loaders.make_loader`: torch ``DataLoader`` over one split (torch is
  imported only there, and only when called), and :func:`~.loaders.eval_transform`.
"""
