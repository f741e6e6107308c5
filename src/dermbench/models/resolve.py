"""``resolve(kind, name) -> ModelSpec``: the one way a model name becomes a model.

The command line, the grid validator, ``dermbench ls`` and the cells all call it, so any name one
accepts, all accept, and they agree on its canonical name (the name of its cell folders):

1. a catalog name (``resnet18``, ``torchvision:resnet152``, ``biomedclip``, ``ollama:gemma3:27b`` ...;
   case-insensitive);
2. a prefix name, canonical as ``prefix:rest`` with the prefix lower-case (``hf-hub:org/repo`` is
   the open_clip model ``open_clip:hf-hub:org/repo``): see :data:`PREFIXES`;
3. for classifiers and backbones, a bare timm model name (``resnet10t`` -> ``timm:resnet10t``:
   the same model, hence the same cell, as the prefix name). Only this last step imports timm
   (and with it torch), and only for a name that is neither of the above.

Anything else is an :class:`~dermbench.errors.UnknownNameError` with close catalog names; a known
model asked for as a kind it is not (a backbone-only model as a finetune classifier) is one too,
saying which kinds it has.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..errors import UnknownNameError
from .catalog import _load, model_names
from .frameworks import FRAMEWORKS
from .spec import KINDS, ModelSpec

#: Kinds ``resolve`` accepts: the model kinds, and ``zeroshot`` (a dual encoder or a generative VLM).
RESOLVE_KINDS = (*KINDS, "zeroshot")

_KIND_WORDS = {"classifier": "finetune classifier", "backbone": "probe backbone", "dual_encoder": "dual encoder",
               "generative": "generative VLM", "zeroshot": "zeroshot model"}


@dataclass(frozen=True)
class Prefix:
    """An open-ended family of names: ``prefix:rest`` loads ``rest`` with ``framework``."""

    prefix: str
    framework: str
    kinds: tuple[str, ...]
    example: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    canonical: str = ""          # the prefix of the canonical name, when not this one

    def __hash__(self) -> int:
        return hash(self.prefix)


PREFIXES: tuple[Prefix, ...] = (
    Prefix("timm", "timm", ("classifier", "backbone"), "timm:convnext_small.fb_in22k",
           "any timm model, name[.weight tag] (a bare timm name works too)"),
    Prefix("torchvision", "torchvision", ("classifier", "backbone"), "torchvision:mobilenet_v3_large",
           "a torchvision model with its DEFAULT weights (name[.WEIGHTS_TAG]), as the study loaded its CNNs"),
    Prefix("hf", "hf", ("backbone", "generative"), "hf:facebook/dinov2-small",
           "Hugging Face: a vision model (AutoModel) as a backbone, an image-text-to-text VLM for zeroshot"),
    Prefix("open_clip", "open_clip", ("backbone", "dual_encoder"), "open_clip:ViT-B-32/laion2b_s34b_b79k",
           "any open_clip model: arch[/pretrained tag] or hf-hub:org/repo"),
    Prefix("hf-hub", "open_clip", ("backbone", "dual_encoder"), "hf-hub:redlessone/DermLIP_ViT-B-16",
           "an open_clip model on the Hugging Face hub (same as open_clip:hf-hub:...)", canonical="open_clip"),
    Prefix("clip", "hf", ("dual_encoder",), "clip:openai/clip-vit-base-patch16",
           "a Hugging Face CLIP model (hub id or local folder; softmax scoring)", {"architecture": "clip"}),
    Prefix("siglip", "hf", ("dual_encoder",), "siglip:google/siglip2-base-patch16-224",
           "a Hugging Face SigLIP model (hub id or local folder; sigmoid scoring)", {"architecture": "siglip"}),
    Prefix("ollama", "ollama", ("generative",), "ollama:llava:13b",
           "any model served by Ollama (/api/chat); the server URL from --url or $OLLAMA_HOST"),
    Prefix("openai", "openai", ("generative",), "openai:Qwen/Qwen2.5-VL-7B-Instruct",
           "any model behind an OpenAI-compatible server (vLLM, llama.cpp, LM Studio); --url or $OPENAI_BASE_URL"),
)
_BY_PREFIX = {p.prefix: p for p in PREFIXES}


def _check_kind(kind: str) -> None:
    if kind not in RESOLVE_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {', '.join(RESOLVE_KINDS)}")


def _kinds_text(kinds: tuple[str, ...]) -> str:
    return " and ".join(_KIND_WORDS[k] for k in kinds)


def prefixes(kind: str | None = None) -> list[Prefix]:
    """The prefixes whose names can be used as ``kind`` (all when None)."""
    if kind is None:
        return list(PREFIXES)
    _check_kind(kind)
    wanted = ("dual_encoder", "generative") if kind == "zeroshot" else (kind,)
    return [p for p in PREFIXES if any(k in p.kinds for k in wanted)]


def _timm_fallback(kind: str) -> bool:
    return kind in ("classifier", "backbone")


@lru_cache(maxsize=256)
def _is_timm_model(name: str) -> bool:
    """Whether timm has an architecture ``name`` (weight tag allowed). Imports timm (and torch)."""
    import timm

    return timm.is_model(name.split(".")[0])


def _prefix_spec(kind: str, name: str, prefix: Prefix, rest: str) -> ModelSpec:
    if not rest:
        raise UnknownNameError(f"{name!r} names no model after {prefix.prefix + ':'!r}; e.g. {prefix.example}")
    if prefix.canonical:  # hf-hub:org/repo is the open_clip model open_clip:hf-hub:org/repo
        return _prefix_spec(kind, name, _BY_PREFIX[prefix.canonical], f"{prefix.prefix}:{rest}")
    spec = ModelSpec(name=f"{prefix.prefix}:{rest}", kinds=prefix.kinds, framework=prefix.framework, model_id=rest,
                     description=prefix.description, licence="the model's own (see its model card)",
                     source=f"{prefix.prefix}:{rest}", extra=FRAMEWORKS[prefix.framework].extra,
                     options=dict(prefix.options), registered=False)
    if not spec.supports(kind):
        raise UnknownNameError(
            f"{prefix.prefix}: names are {_kinds_text(prefix.kinds)}s, not {_KIND_WORDS[kind]}s; "
            f"{_KIND_WORDS[kind]} prefixes: {', '.join(p.prefix + ':' for p in prefixes(kind)) or 'none'}")
    return spec


def _unknown(kind: str, name: str) -> UnknownNameError:
    names = model_names(kind)
    close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    ways = [f"a prefix name ({', '.join(p.prefix + ':<model>' for p in prefixes(kind))})"]
    if _timm_fallback(kind):
        ways.append("any timm model name")
    if "/" in name and ":" not in name:
        usable = [p.prefix for p in prefixes(kind)]
        hint += f" A hub id needs a prefix, e.g. {'hf' if 'hf' in usable else usable[0]}:{name}."
    return UnknownNameError(f"unknown {_KIND_WORDS[kind]} {name!r}.{hint} Named {_KIND_WORDS[kind]}s: "
                            f"{', '.join(names) or 'none'}; or {' or '.join(ways)} (`dermbench ls`).")


def resolve(kind: str, name: str) -> ModelSpec:
    """The spec of model ``name`` used as ``kind`` (see the module docstring for the name rules)."""
    _check_kind(kind)
    if isinstance(name, ModelSpec):
        name = name.name
    text = str(name).strip()
    table = _load()
    spec = table.get(text.lower())
    if spec is not None:
        if not spec.supports(kind):
            raise UnknownNameError(
                f"{spec.name!r} is a {_kinds_text(spec.kinds)}, not a {_KIND_WORDS[kind]}. "
                f"Named {_KIND_WORDS[kind]}s: {', '.join(model_names(kind)) or 'none'}")
        return spec
    head, sep, rest = text.partition(":")
    if sep:
        prefix = _BY_PREFIX.get(head.strip().lower())
        if prefix is None:
            raise UnknownNameError(f"unknown model prefix {head + ':'!r} in {text!r}; prefixes for "
                                   f"{_KIND_WORDS[kind]}s: {', '.join(p.prefix + ':' for p in prefixes(kind))}")
        return _prefix_spec(kind, text, prefix, rest.strip())
    if text and _timm_fallback(kind) and _is_timm_model(text.lower()):
        return _prefix_spec(kind, text, _BY_PREFIX["timm"], text.lower())
    raise _unknown(kind, text)


def canonical_name(kind: str, name: str) -> str:
    """``resolve(kind, name).name``: the name of the model's cells, reports and CLI output."""
    return resolve(kind, name).name
