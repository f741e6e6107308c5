"""What a finetune classifier is, whatever framework built it: a :class:`BuiltClassifier`.

A classifier is a torch module with two logits (0 = benign, 1 = malignant; softmax -> p_malignant)
that exposes its head through ``get_classifier()`` (timm's API), the preprocessing of its weights
(``data_config``) and a weights identity for caches and run records. A frozen backbone trains only
that head; :func:`set_train_mode` keeps the frozen part in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .spec import ModelSpec

#: Output classes of every finetune classifier: 0 = benign, 1 = malignant (softmax -> p_malignant).
NUM_CLASSES = 2


@dataclass
class BuiltClassifier:
    model: Any                      # torch.nn.Module, logits [B, 2]
    data_config: dict[str, Any]     # mean, std, input_size, interpolation, crop_pct of the weights
    weights_identity: str           # "timm:...", "random init", "file:... sha256:...", "pypi:..."
    spec: ModelSpec
    freeze_backbone: bool = False   # only the head trains (the entry's default, or the setting)
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


def finish_classifier(model: Any, data_config: dict[str, Any], identity: str, spec: ModelSpec,
                      freeze: bool) -> BuiltClassifier:
    """Freeze the backbone if asked and count parameters: the common end of every classifier builder."""
    frozen = freeze_backbone(model) if freeze else []
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return BuiltClassifier(model=model, data_config=data_config, weights_identity=identity, spec=spec,
                           freeze_backbone=bool(freeze), trainable_parameters=int(trainable),
                           total_parameters=int(total), frozen_parameters=frozen)
