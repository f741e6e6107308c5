"""Hugging Face ``AutoModel`` vision backbones (DINOv2, DINOv3, CLIP-style image towers ...).

Pooling is an explicit, recorded choice: ``pooler`` (the model's ``pooler_output``; for DINOv2
the layer-normed CLS token, which is how the study pooled ``facebook/dinov2-giant``), ``cls``
(``last_hidden_state[:, 0]``), ``mean`` (mean of the patch tokens, CLS excluded) or
``image_features`` (``get_image_features`` of CLIP-style models such as MONET).

Weights: a hub id (loaded from the local cache only, unless the hub is reachable), a local
folder saved with ``save_pretrained`` (``weights=PATH``), or ``random`` with a ``config`` (a
transformers config object or dict with ``model_type``) for tests and smoke runs. Mean/std and
the working size come from the model's image-processor config when it is available.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel

from ....errors import WeightsNotFoundError
from ...embedders.base import Embedder, torch_forward
from ...spec import ModelSpec
from ...weights import file_identity, folder_identity, hf_cached_file, require_hub

POOLINGS = ("pooler", "cls", "mean", "image_features")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _processor_config(source: str, local: bool) -> dict[str, Any]:
    """mean/std/size from ``preprocessor_config.json`` (local folder or HF cache), if present."""
    path = None
    if local:
        candidate = Path(source) / "preprocessor_config.json"
        path = str(candidate) if candidate.is_file() else None
    else:
        path = hf_cached_file(source, ("preprocessor_config.json",))
    if not path:
        return {}
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, Any] = {}
    if cfg.get("image_mean") and cfg.get("image_std"):
        out["mean"] = tuple(float(v) for v in cfg["image_mean"])
        out["std"] = tuple(float(v) for v in cfg["image_std"])
    crop = cfg.get("crop_size") or cfg.get("size")
    if isinstance(crop, dict):
        crop = crop.get("height") or crop.get("shortest_edge")
    if isinstance(crop, int):
        out["image_size"] = crop
    return out


def _load_model(model_id: str | None, weights: str | None, config: Any) -> tuple[Any, str, str, bool]:
    """(model, weights identity, source used for the processor config, source is a local folder)."""
    if weights == "random":
        if config is None:
            if not model_id:
                raise ValueError("a random-init HF backbone needs a config or a model id")
            if not hf_cached_file(model_id, ("config.json",)):
                require_hub(f"the config of {model_id!r}", f"Download it with `huggingface-cli download {model_id} config.json`.")
            config = AutoConfig.from_pretrained(model_id)
        if isinstance(config, dict):
            config = dict(config)
            config = AutoConfig.for_model(config.pop("model_type"), **config)
        return AutoModel.from_config(config), "random init", model_id or "", False
    if weights and weights not in ("default",):
        folder = Path(weights).expanduser()
        if not (folder / "config.json").is_file():
            raise WeightsNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json); pass the folder "
                                       f"written by save_pretrained / `huggingface-cli download {model_id or '<id>'} "
                                       f"--local-dir {folder}`")
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        shards = sorted(list(folder.glob("*.safetensors")) + list(folder.glob("*.bin")))
        identity = file_identity(shards[0]) if len(shards) == 1 else folder_identity(folder, shards)
        return model, identity, str(folder), True
    if not model_id:
        raise ValueError("an HF backbone needs a model id (hf:<org/model>)")
    cached = hf_cached_file(model_id, ("config.json",)) and hf_cached_file(
        model_id, ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"))
    if not cached:
        require_hub(f"the weights of Hugging Face model {model_id!r}",
                    f"Download them where there is internet: `huggingface-cli download {model_id}`, and copy the "
                    f"Hugging Face cache folder here (or pass --weights to a local folder).")
    model = AutoModel.from_pretrained(model_id, local_files_only=bool(cached))
    revision = getattr(model.config, "_commit_hash", None)
    return model, f"hf:{model_id}" + (f"@{revision[:12]}" if revision else ""), model_id, False


def build_embedder(spec: ModelSpec, *, weights: str, pooling: str | None = None, image_size: int | None = None,
                   resize_mode: str = "crop", config: Any = None, **options: Any) -> Embedder:
    """The model's pooled image features (``pooling``: the entry's, else ``pooler``); ``config``: a
    transformers config (object or dict with ``model_type``) for a random-init model without a hub id."""
    if options:
        raise ValueError(f"Hugging Face backbones take pooling, image_size, resize_mode and config; "
                         f"got {sorted(options)}")
    pooling = pooling or spec.options.get("pooling", "pooler")
    model_id = spec.model_id
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")

    if os.environ.get("DERMBENCH_OFFLINE") or os.environ.get("HF_HUB_OFFLINE"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, identity, source, local = _load_model(model_id, weights, config)
    model.eval()
    proc = _processor_config(source, local) if source else {}
    mean, std = proc.get("mean", _IMAGENET[0]), proc.get("std", _IMAGENET[1])
    cfg = getattr(model.config, "vision_config", model.config)
    size = int(image_size or proc.get("image_size") or getattr(cfg, "image_size", 224) or 224)

    def pool(out: Any, x: Any) -> Any:
        if pooling == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ValueError(f"{model_id or 'this model'} has no pooler_output; use --pooling cls or mean")
            return pooled.flatten(1)
        hidden = out.last_hidden_state
        if hidden.ndim == 4:  # convolutional models: [B, C, H, W]
            return hidden.mean(dim=(2, 3))
        if pooling == "cls":
            return hidden[:, 0]
        n_prefix = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        return hidden[:, n_prefix:].mean(1)

    class _Wrapped(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            if pooling == "image_features":
                feats = self.inner.get_image_features(pixel_values=x)
                # transformers 5 returns an output object here; older releases a tensor
                return feats if isinstance(feats, torch.Tensor) else feats.pooler_output
            return pool(self.inner(pixel_values=x), x)

    wrapped = _Wrapped(model).eval()
    with torch.inference_mode():
        dim = int(wrapped(torch.zeros(1, 3, size, size)).shape[-1])
    return Embedder(name=spec.name, weights_identity=identity, embed_dim=dim, image_size=size,
                    resize_mode=resize_mode, mean=tuple(mean), std=tuple(std), input_kind="float",
                    forward=torch_forward(wrapped), module=wrapped,
                    details={"library": "transformers", "model_id": model_id, "pooling": pooling,
                             "architecture": type(model).__name__})
