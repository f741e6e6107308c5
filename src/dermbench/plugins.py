"""Where every registry lives, so ``dermbench ls`` can list them without importing backends.

Each value is ``"module:attribute"`` of a :class:`dermbench.registry.Registry`. The modules named
here are light (they only declare entries); the entries point at the heavy code.
"""

from __future__ import annotations

import importlib

from .registry import Registry

REGISTRIES: dict[str, str] = {
    "paradigms": "dermbench.paradigms:PARADIGMS",
    "sources": "dermbench.data.sources:SOURCES",
    "finetune-models": "dermbench.models.classifiers:CLASSIFIERS",
    "backbones": "dermbench.models.backbones:BACKBONES",
    "heads": "dermbench.paradigms.probe.heads:HEADS",
    "zeroshot-models": "dermbench.models.zeroshot:ZEROSHOT_MODELS",
    "prompt-sets": "dermbench.paradigms.zeroshot.prompts:PROMPT_SETS",
}


def get_registry(kind: str) -> Registry:
    if kind not in REGISTRIES:
        raise KeyError(f"unknown registry {kind!r}; available: {', '.join(REGISTRIES)}")
    module_name, _, attr = REGISTRIES[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)
