"""Hugging Face transformers: vision backbones, CLIP/SigLIP dual encoders, generative VLMs.

* :mod:`.automodel` — ``AutoModel`` image features as a probe backbone (DINOv2, MONET's image tower ...).
* :mod:`.dual` — ``CLIPModel`` / SigLIP dual encoders (``options.architecture``: ``clip`` or ``siglip``).
* :mod:`.generative` — image-text-to-text VLMs run locally (Qwen2-VL, MedGemma, Phi-3.5-vision ...).
* :mod:`.common` — where a model loads from (hub cache, local folder, random init) and the error
  when its weights are missing.
"""

from __future__ import annotations

from .automodel import build_embedder
from .dual import build_dual_encoder
from .generative import build_generative

__all__ = ["build_dual_encoder", "build_embedder", "build_generative"]
