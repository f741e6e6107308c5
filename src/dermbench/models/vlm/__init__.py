"""Zeroshot model backends (imported lazily through :mod:`dermbench.models.zeroshot`).

* :mod:`.dual` - dual encoders (Hugging Face CLIP / SigLIP, open_clip): image and text embeddings.
* :mod:`.hf_generative` - local generative VLMs (``AutoModelForImageTextToText``), batched, greedy.
* :mod:`.http` - generative VLMs behind a server: Ollama ``/api/chat`` and OpenAI-compatible
  ``/v1/chat/completions``, with bounded concurrency, timeouts and retries.
* :mod:`.base` - what every generative backend takes and returns (no heavy imports).
"""
