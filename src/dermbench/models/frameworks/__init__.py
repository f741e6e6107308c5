"""The libraries dermbench loads models with: one module per framework.

A framework module implements the builders for the kinds it supports, with these names:

* ``build_classifier(spec, *, weights, freeze, drop_rate, image_size) -> BuiltClassifier``
* ``build_embedder(spec, *, weights, **options) -> Embedder``
* ``build_dual_encoder(spec, settings, *, weights, device, seed) -> DualEncoder``
* ``build_generative(spec, settings, *, weights, device, seed) -> GenerativeBackend``

``weights`` arrives resolved (``default`` means the entry's default weights: see
:func:`dermbench.models.build.weights_for`) and ``device`` chosen (:func:`dermbench.utils.device.choose_device`).

:data:`FRAMEWORKS` says which module that is, which kinds it builds and which pip extra it needs,
without importing it (``import dermbench`` stays light). Adding a framework is one module here
and one line in :data:`FRAMEWORKS`; adding a model of a known framework is one catalog entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Framework:
    module: str                  # "dermbench.models.frameworks.timm"
    kinds: tuple[str, ...]       # kinds it can build
    extra: str | None = None     # pip extra that installs the library (None: a core dependency)
    library: str = ""            # what the user installs / reads about
    local: bool = True           # runs on this machine (False: a client of a model server)


_PKG = "dermbench.models.frameworks"

FRAMEWORKS: dict[str, Framework] = {
    "timm": Framework(f"{_PKG}.timm", ("classifier", "backbone"), library="timm"),
    "torchvision": Framework(f"{_PKG}.torchvision", ("classifier", "backbone"), library="torchvision"),
    "hf": Framework(f"{_PKG}.hf", ("backbone", "dual_encoder", "generative"), extra="hf", library="transformers"),
    "open_clip": Framework(f"{_PKG}.open_clip", ("backbone", "dual_encoder"), extra="clip",
                           library="open_clip_torch"),
    "tf": Framework(f"{_PKG}.tf", ("backbone",), extra="tf", library="tensorflow"),
    "handcrafted": Framework(f"{_PKG}.handcrafted", ("backbone",), library="numpy/scipy (no weights)"),
    "ollama": Framework(f"{_PKG}.http", ("generative",), extra="vlm", library="httpx (an Ollama server)",
                        local=False),
    "openai": Framework(f"{_PKG}.http", ("generative",), extra="vlm",
                        library="httpx (an OpenAI-compatible server)", local=False),
}

#: Builder function of each kind in a framework module.
BUILDER_NAMES = {"classifier": "build_classifier", "backbone": "build_embedder",
                 "dual_encoder": "build_dual_encoder", "generative": "build_generative"}


def load_framework(name: str, *, model: str = "") -> ModuleType:
    """Import a framework module; a missing library is an ImportError naming the extra to install."""
    framework = FRAMEWORKS[name]
    try:
        return importlib.import_module(framework.module)
    except ImportError as exc:
        missing = exc.name or str(exc)
        if missing == "dermbench" or missing.startswith("dermbench."):
            raise
        hint = f"pip install 'dermbench[{framework.extra}]'" if framework.extra else f"pip install {framework.library}"
        subject = f"model {model!r}" if model else f"framework {name!r}"
        raise ImportError(f"{subject} needs {missing} ({framework.library}): {hint}") from exc
