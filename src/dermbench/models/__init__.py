"""Models: one catalog, one resolver, one builder per kind, one module per framework.

::

    from dermbench.models import resolve
    spec = resolve("backbone", "biomedclip")      # ModelSpec: plain data, nothing imported
    spec.name, spec.kinds, spec.framework, spec.model_id, spec.licence, spec.study

* :mod:`.spec` — :class:`ModelSpec`, the kinds (classifier, backbone, dual_encoder, generative).
* :mod:`.catalog` — every named model, read from ``configs/models.yaml``.
* :mod:`.resolve` — :func:`resolve`: catalog names, prefix names (``timm:``, ``hf:``, ``open_clip:``,
  ``hf-hub:``, ``clip:``, ``siglip:``, ``ollama:``, ``openai:``), bare timm names.
* :mod:`.build` — :func:`build_classifier`, :func:`build_embedder`, :func:`build_zeroshot`.
* :mod:`.frameworks` — one module per library (timm, hf, open_clip, tf, handcrafted, http).
* :mod:`.classifier`, :mod:`.embedders.base`, :mod:`.vlm` — what a built model of each kind is.
* :mod:`.weights` — where weights come from (hub cache, offline errors, local files, packaged weights).

Importing this package imports no framework; the builders import theirs when called.
"""

from __future__ import annotations

from .build import build_classifier, build_embedder, build_zeroshot, weights_for
from .catalog import catalog, model_names
from .resolve import PREFIXES, RESOLVE_KINDS, Prefix, canonical_name, prefixes, resolve
from .spec import KINDS, ZEROSHOT_KINDS, ModelSpec

__all__ = ["KINDS", "PREFIXES", "RESOLVE_KINDS", "ZEROSHOT_KINDS", "ModelSpec", "Prefix", "build_classifier",
           "build_embedder", "build_zeroshot", "canonical_name", "catalog", "model_names", "prefixes", "resolve",
           "weights_for"]
