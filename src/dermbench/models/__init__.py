"""Models: one catalog, one resolver, one builder per kind, one module per framework.

::

    from dermbench.models import resolve
    spec = resolve("backbone", "biomedclip")      # ModelSpec: plain data, nothing imported
    spec.name, spec.kinds, spec.framework, spec.model_id, spec.licence, spec.study

* :mod:`.spec` — :class:`ModelSpec`, the kinds (classifier, backbone, dual_encoder, generative).
* :mod:`.catalog` — every named model, read from ``configs/models.yaml``.
* :mod:`.resolve` — :func:`resolve`: catalog names, prefix names (``timm:``, ``hf:``, ``open_clip:``,
  ``hf-hub:``, ``clip:``, ``siglip:``, ``ollama:``, ``openai:``), bare timm names.
* :mod:`.frameworks` — one module per library (timm, hf, open_clip, tf, handcrafted, http).

Importing this package imports no framework; the builders import theirs when called.
"""

from __future__ import annotations

from .catalog import catalog, model_names
from .resolve import PREFIXES, RESOLVE_KINDS, Prefix, canonical_name, prefixes, resolve
from .spec import KINDS, ZEROSHOT_KINDS, ModelSpec

__all__ = ["KINDS", "PREFIXES", "RESOLVE_KINDS", "ZEROSHOT_KINDS", "ModelSpec", "Prefix", "canonical_name",
           "catalog", "model_names", "prefixes", "resolve"]
