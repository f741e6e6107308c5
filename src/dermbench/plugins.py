"""Where every plugin listing lives, so ``dermbench ls`` can list them without importing backends.

Models are not a registry of code but one catalog of data (:mod:`dermbench.models`): the model
listings are views of it by kind. Every other kind of plugin is a
:class:`dermbench.registry.Registry`, named here as ``"module:attribute"``; the modules named are
light (they only declare entries; the entries point at the heavy code).
"""

from __future__ import annotations

import importlib

from .registry import Registry

REGISTRIES: dict[str, str] = {
    "paradigms": "dermbench.paradigms:PARADIGMS",
    "sources": "dermbench.data.sources:SOURCES",
    "heads": "dermbench.paradigms.probe.heads:HEADS",
    "prompt-sets": "dermbench.paradigms.zeroshot.prompts:PROMPT_SETS",
}

#: ``dermbench ls`` listing -> the model kinds it shows (from the model catalog).
MODEL_LISTINGS: dict[str, tuple[str, ...]] = {
    "finetune-models": ("classifier",),
    "backbones": ("backbone",),
    "zeroshot-models": ("dual_encoder", "generative"),
}

#: Every listing, in the order ``dermbench ls`` prints them.
LISTINGS: tuple[str, ...] = ("paradigms", "sources", "finetune-models", "backbones", "heads", "zeroshot-models",
                             "prompt-sets")


def get_registry(kind: str) -> Registry:
    if kind not in REGISTRIES:
        raise KeyError(f"unknown registry {kind!r}; available: {', '.join(REGISTRIES)}"
                       + (" (models are listed from dermbench.models.catalog)" if kind in MODEL_LISTINGS else ""))
    module_name, _, attr = REGISTRIES[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)
