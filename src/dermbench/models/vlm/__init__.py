"""What zeroshot models are, independent of the framework that loads them.

* :mod:`.dual` - dual encoders: the :class:`~.dual.DualEncoder` interface, prompt-ensemble scoring
  (softmax / sigmoid) and the image/text embedding caches.
* :mod:`.base` - generative VLMs: requests, answers and token log-probabilities (no heavy imports).
* :mod:`.testing` - a local stand-in VLM server for tests and benchmarks.

The implementations live in :mod:`dermbench.models.frameworks` (hf, open_clip, http).
"""
