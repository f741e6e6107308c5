"""Build a finetune classifier: a timm model with a 2-class head, its preprocessing and weights identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...models.classifiers import ClassifierSpec, resolve_classifier

#: Output classes of every finetune classifier: 0 = benign, 1 = malignant (softmax -> p_malignant).
NUM_CLASSES = 2


@dataclass
class BuiltClassifier:
    model: Any                      # torch.nn.Module, logits [B, 2]
    data_config: dict[str, Any]     # mean, std, input_size, interpolation, crop_pct of the weights
    weights_identity: str           # "timm:...", "random init", "file:... sha256:...", "pypi:..."
    spec: ClassifierSpec
    trainable_parameters: int = 0
    total_parameters: int = 0
    frozen_parameters: list[str] = field(default_factory=list)


def head_parameter_names(model: Any) -> set[str]:
    """Names of the parameters of the classification head (``model.get_classifier()``)."""
    head = model.get_classifier()
    head_ids = {id(p) for p in head.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in head_ids}


def freeze_backbone(model: Any) -> list[str]:
    """Stop gradients everywhere except the classification head; returns the frozen names.

    The backbone's normalisation statistics are frozen as well (see :func:`set_train_mode`):
    a frozen backbone whose BatchNorm running means still drift is not frozen.
    """
    head = head_parameter_names(model)
    if not head:
        raise ValueError(f"{type(model).__name__} exposes no classifier parameters; cannot freeze its backbone")
    frozen = []
    for name, param in model.named_parameters():
        if name not in head:
            param.requires_grad_(False)
            frozen.append(name)
    model._dermbench_frozen_backbone = True
    return frozen


def set_train_mode(model: Any) -> None:
    """``model.train()``, except that a frozen backbone stays in eval mode (only the head trains)."""
    if getattr(model, "_dermbench_frozen_backbone", False):
        model.eval()
        model.get_classifier().train()
    else:
        model.train()


def build_classifier(name: str | ClassifierSpec, *, weights: str | None = None,
                     freeze: bool | None = None, drop_rate: float | None = None,
                     image_size: int | None = None) -> BuiltClassifier:
    """The one factory of finetune models (every ``CLASSIFIERS`` entry points here).

    ``name`` is a registry name (``resnet18``, ``dinov3_convnext_tiny_backbone_freezed`` ...) or
    any timm name. Weights come through :func:`dermbench.models.weights.create_timm_model`, so a
    missing download is a :class:`~dermbench.models.weights.WeightsNotFoundError` within a second,
    never a silent random init.
    """
    from ...models.weights import create_timm_model

    spec = name if isinstance(name, ClassifierSpec) else resolve_classifier(name, weights, freeze)
    kwargs: dict[str, Any] = {}
    if drop_rate is not None:
        kwargs["drop_rate"] = float(drop_rate)
    if image_size is not None:
        # Models with a fixed input grid (ViTs) are built for the working resolution; timm resamples
        # their position embeddings when loading weights. CNNs take any size and reject the argument.
        try:
            model, data_config, identity = create_timm_model(spec.timm_name, weights=spec.weights,
                                                             num_classes=NUM_CLASSES, img_size=int(image_size),
                                                             **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            model, data_config, identity = create_timm_model(spec.timm_name, weights=spec.weights,
                                                             num_classes=NUM_CLASSES, **kwargs)
    else:
        model, data_config, identity = create_timm_model(spec.timm_name, weights=spec.weights,
                                                         num_classes=NUM_CLASSES, **kwargs)
    frozen = freeze_backbone(model) if spec.freeze_backbone else []
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return BuiltClassifier(model=model, data_config=data_config, weights_identity=identity, spec=spec,
                           trainable_parameters=int(trainable), total_parameters=int(total),
                           frozen_parameters=frozen)
