"""torchvision: the study's CNN/ViT checkpoints, loaded as the study loaded them.

The study built every fine-tuned CNN and ViT with ``torchvision.models.<name>(weights=DEFAULT)``
and replaced the last linear layer with ``Linear(in, 2)`` (STUDY.md §2.2). timm hosts some of
those checkpoints (``resnet18.tv_in1k``) but not all: ResNet-152's ``DEFAULT`` is torchvision's
``IMAGENET1K_V2`` recipe, EfficientNet-B0/B7, ViT-B/32 and ViT-L/16 weights are torchvision's
own. So the catalog's ``torchvision:<name>`` entries load torchvision's models and weights
directly: the same module, the same tensors, the same head position.

Weights:

* ``default`` — the architecture's ``DEFAULT`` weights enum (``model_id`` may pin another one:
  ``resnet152.IMAGENET1K_V1``), from the torch hub cache (``$TORCH_HOME/hub/checkpoints``, no
  network contact) when the file is there, else downloaded when ``download.pytorch.org`` answers,
  else :class:`~dermbench.errors.WeightsNotFoundError` naming the file and the folder;
* ``random`` — ``weights=None`` (random init; the identity says so);
* a local file — a torchvision (1000-class) or fine-tuned (2-class) state dict, loaded strictly.

The model is wrapped in :class:`TorchvisionClassifier`, which adds timm's ``get_classifier()``
(what freezing and the training loop use) and nothing else. As a backbone, the replaced layer is
an ``Identity``: the vector is what the study's head read (pooled features; the CLS token for ViTs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import WeightsNotFoundError
from ..classifier import NUM_CLASSES, BuiltClassifier, finish_classifier
from ..embedders.base import Embedder, torch_forward
from ..spec import ModelSpec
from ..weights import file_identity, hub_reachable, load_state_dict_file, load_state_dict_strict, offline_requested

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DOWNLOAD_HOST = "download.pytorch.org"


class TorchvisionClassifier(nn.Module):
    """A torchvision model whose last linear layer (at ``head_path``) is the classification head."""

    def __init__(self, net: nn.Module, head_path: str):
        super().__init__()
        self.net = net
        self.head_path = head_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def get_classifier(self) -> nn.Module:
        return self.net.get_submodule(self.head_path)


def _split_id(model_id: str) -> tuple[str, str | None]:
    """``resnet152`` -> (resnet152, None = DEFAULT); ``resnet152.IMAGENET1K_V1`` -> (resnet152, that tag)."""
    name, _, tag = model_id.partition(".")
    return name, tag or None


def _weights_enum(name: str, tag: str | None) -> Any:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"torchvision has no model {name!r} with weights ({exc})") from exc
    if tag is None:
        return enum.DEFAULT
    try:
        return enum[tag]
    except KeyError:
        raise ValueError(f"torchvision {name} has no weights {tag!r}; it has "
                         f"{', '.join(w.name for w in enum)}") from None


def last_linear(model: nn.Module) -> str:
    """Dotted path of the model's last ``nn.Linear`` (the head the study replaced: ``fc``,
    ``classifier.1``, ``classifier``, ``heads.head``, ``classifier.2``)."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear layer to replace")
    return linears[-1]


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _cached_checkpoint(weights: Any) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url.split("?")[0])
    return path if path.is_file() else None


def _build(spec: ModelSpec, weights: str, image_size: int | None = None) -> tuple[nn.Module, dict[str, Any], str]:
    """(torchvision model with its ImageNet head, preprocessing, weights identity)."""
    import torchvision

    name, tag = _split_id(spec.model_id)
    kwargs: dict[str, Any] = {}
    if weights == "random":
        if image_size is not None and name.startswith("vit_"):
            kwargs["image_size"] = int(image_size)  # a ViT's position grid follows the working size
        return torchvision.models.get_model(name, weights=None, **kwargs), _data_config(None), "random init"
    if weights in ("default", "pretrained"):
        enum = _weights_enum(name, tag)
        identity = f"torchvision:{name}.{enum.name}"
        if name.startswith("vit_") and image_size not in (None, enum.meta["min_size"][0]):
            raise ValueError(f"torchvision {name} {enum.name} weights are for {enum.meta['min_size'][0]} px "
                             f"images; use image_size {enum.meta['min_size'][0]} (the study's 224)")
        if _cached_checkpoint(enum) is None:
            if offline_requested() or not hub_reachable(DOWNLOAD_HOST):
                target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
                raise WeightsNotFoundError(
                    f"the torchvision weights {identity} are not in the torch hub cache and {DOWNLOAD_HOST} is not "
                    f"reachable. Download {enum.url} where there is internet and copy it to {target} (set "
                    f"TORCH_HOME to use another cache), or pass --weights PATH / --weights random")
        # torchvision's own builder: it reads the cached file (checking its hash) or downloads it,
        # and applies its own key fixes (DenseNet's old checkpoint names)
        model = torchvision.models.get_model(name, weights=enum)
        return model, _data_config(enum), identity
    model = torchvision.models.get_model(name, weights=None)
    return model, _data_config(None), str(weights)  # a file: loaded by the caller


def _data_config(enum: Any) -> dict[str, Any]:
    if enum is None:
        return {"mean": IMAGENET[0], "std": IMAGENET[1], "input_size": (3, 224, 224), "interpolation": "bilinear",
                "crop_pct": 0.875}
    t = enum.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    return {"mean": tuple(float(v) for v in t.mean), "std": tuple(float(v) for v in t.std),
            "input_size": (3, crop, crop), "interpolation": str(t.interpolation.value), "crop_pct": crop / resize}


def _load_file(model: nn.Module, head: str, path: str) -> tuple[nn.Module, str]:
    """Load a local state dict: a torchvision checkpoint (ImageNet head) or a 2-class fine-tune
    (saved from :class:`TorchvisionClassifier`, keys under ``net.``)."""
    state = load_state_dict_file(path)
    if state and all(k.startswith("net.") for k in state):
        state = {k[len("net."):]: v for k, v in state.items()}
    weight = state.get(f"{head}.weight")
    if weight is not None and int(weight.shape[0]) == NUM_CLASSES:
        old = model.get_submodule(head)
        _set_module(model, head, nn.Linear(old.in_features, NUM_CLASSES))
    load_state_dict_strict(model, state, str(path))
    return model, file_identity(path)


def build_classifier(spec: ModelSpec, *, weights: str, freeze: bool, drop_rate: float | None = None,
                     image_size: int | None = None) -> BuiltClassifier:
    """The torchvision model with its last linear layer replaced by ``Linear(in, 2)``, as the study did."""
    if drop_rate is not None:
        raise ValueError(f"{spec.name}: drop_rate is a timm option; torchvision models keep their own dropout")
    model, config, identity = _build(spec, weights, image_size)
    head = last_linear(model)
    if identity not in ("random init",) and not identity.startswith("torchvision:"):
        model, identity = _load_file(model, head, weights)
    old = model.get_submodule(head)
    if old.out_features != NUM_CLASSES:
        _set_module(model, head, nn.Linear(old.in_features, NUM_CLASSES))
    return finish_classifier(TorchvisionClassifier(model, head), config, identity, spec, freeze)


def build_embedder(spec: ModelSpec, *, weights: str, image_size: int | None = None, resize_mode: str = "crop",
                   **options: Any) -> Embedder:
    """The vector the study's head read: the last linear layer replaced by ``Identity``."""
    if options:
        raise ValueError(f"torchvision backbones take image_size and resize_mode; got {sorted(options)}")
    model, config, identity = _build(spec, weights, image_size)
    head = last_linear(model)
    if identity not in ("random init",) and not identity.startswith("torchvision:"):
        model, identity = _load_file(model, head, weights)
    dim = int(model.get_submodule(head).in_features)
    _set_module(model, head, nn.Identity())
    model.eval()
    return Embedder(name=spec.name, weights_identity=identity, embed_dim=dim,
                    image_size=int(image_size or config["input_size"][-1]), resize_mode=resize_mode,
                    mean=tuple(config["mean"]), std=tuple(config["std"]), input_kind="float",
                    forward=torch_forward(model), module=model,
                    details={"library": "torchvision", "model_name": spec.model_id, "pooling": f"input of {head}",
                             "interpolation": config["interpolation"]})
