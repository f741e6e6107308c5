"""Hugging Face dual encoders: ``CLIPModel`` (OpenAI CLIP, MONET: softmax scoring) and SigLIP models
(SigLIP, MedSigLIP: sigmoid scoring), with the tokenizer and image processor of their repository.

A hub id is loaded from the local cache (no download is attempted when offline); a missing
weight is a clear error naming what to download. ``weights="random"`` builds the architecture
from its config with random parameters (tests, smoke runs); the record then says "random init".
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers import AutoImageProcessor, AutoTokenizer

from ....utils.device import torch_dtype
from ...spec import ModelSpec
from ...vlm.dual import DualEncoder
from .common import RANDOM_IDENTITY, hf_source, loaded_from, missing_weights


def _features(output: Any) -> Any:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    return pooled if pooled is not None else output[0]


class _ProcessorPixels:
    """One image -> ``pixel_values[0]`` of a Hugging Face image processor (picklable, model-free)."""

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, image: Any) -> Any:
        return self.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]


class HFClipEncoder(DualEncoder):
    """Hugging Face ``CLIPModel`` (OpenAI CLIP, MONET ...): tokenizer + image processor of the repo."""

    scoring = "softmax"

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, **kw: Any):
        super().__init__(model, **kw)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.logit_scale = float(model.logit_scale.detach().exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach().item()) if bias is not None else None

    def _pixel_batch(self, images: list[Any]) -> Any:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def image_preprocessor(self) -> Any:
        return _ProcessorPixels(self.image_processor)

    def _image_features(self, pixels: Any) -> Any:
        return _features(self.model.get_image_features(pixel_values=pixels.to(self.model.dtype)))

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        return self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")

    def _text_features(self, texts: list[str]) -> Any:
        tokens = {k: v.to(self.device) for k, v in self._tokenize(texts).items()
                  if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**tokens))

class HFSiglipEncoder(HFClipEncoder):
    """Hugging Face ``SiglipModel`` (SigLIP, MedSigLIP): sigmoid scoring, text padded to max length
    (SigLIP was trained on ``padding="max_length"`` text and has no attention mask in its text tower)."""

    scoring = "sigmoid"

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        max_length = int(getattr(self.model.config.text_config, "max_position_embeddings", 64))
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                                return_tensors="pt")
        tokens.pop("attention_mask", None)
        return tokens


#: ``options.architecture`` -> (transformers model class, encoder class)
ARCHITECTURES = {"clip": ("CLIPModel", HFClipEncoder), "siglip": ("AutoModel", HFSiglipEncoder)}


def build_dual_encoder(spec: ModelSpec, settings: Any, *, weights: str, device: str, seed: int = 42) -> DualEncoder:
    architecture = spec.options.get("architecture", "clip")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{spec.name}: unknown dual-encoder architecture {architecture!r}; "
                         f"use one of {', '.join(ARCHITECTURES)}")
    model_cls_name, encoder_cls = ARCHITECTURES[architecture]
    dev = torch.device(device)
    dtype = torch_dtype(settings.dtype, dev, fp16_safe=spec.fp16_safe)
    source, random_init = hf_source(spec.model_id, weights)
    model_cls = getattr(transformers, model_cls_name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        image_processor = AutoImageProcessor.from_pretrained(source)
        # Built or loaded in ``dtype`` (transformers keeps the modules a model needs in float32 in
        # float32); moved to the device afterwards without another cast.
        if random_init:
            config = transformers.AutoConfig.from_pretrained(source)
            model = transformers.AutoModel.from_config(config, dtype=dtype)
            identity = RANDOM_IDENTITY
        else:
            model = model_cls.from_pretrained(source, dtype=dtype)
            identity = loaded_from(source)
    except OSError as exc:
        raise missing_weights(source, exc, f"huggingface-cli download {spec.model_id}") from exc
    model = model.to(dev)
    return encoder_cls(model, tokenizer, image_processor, device=dev, weights=identity, model_id=spec.model_id,
                       batch_size=settings.batch_size, dtype=str(dtype).replace("torch.", ""))
