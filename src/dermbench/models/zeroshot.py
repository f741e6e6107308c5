"""Registry of zeroshot models: dual encoders and generative VLM backends.

Named entries are the study's models by the names users know (``clip_vit_b32``, ``medsiglip_448``,
``qwen2_vl_2b`` ...). Every entry's target is a factory ``factory(model_id, settings, device)``
in :mod:`dermbench.models.vlm`; its metadata says the ``kind`` (``dual`` or ``generative``), the
``backend``, the ``model_id`` (hub name) and the ``licence`` and ``source`` of the weights.

Any other model is reached by a **prefix name** (the part after the first ``:`` is the model id):

===================  ==========================================  =============================
prefix               example                                     backend
===================  ==========================================  =============================
``ollama:``          ``ollama:llama3.2-vision:11b``              Ollama ``/api/chat``
``openai:``          ``openai:Qwen/Qwen2.5-VL-7B-Instruct``      OpenAI-compatible server (vLLM,
                                                                 llama.cpp, LM Studio, OpenAI)
``hf:``              ``hf:Qwen/Qwen2-VL-7B-Instruct``            local Hugging Face generative VLM
``clip:``            ``clip:openai/clip-vit-base-patch16``       Hugging Face CLIP (softmax)
``siglip:``          ``siglip:google/siglip2-base-patch16-224``  Hugging Face SigLIP (sigmoid)
``open_clip:``       ``open_clip:ViT-B-32/laion2b_s34b_b79k``    open_clip ``name[/pretrained]``
                     ``open_clip:hf-hub:org/repo``
===================  ==========================================  =============================

Server URLs come from the zeroshot setting ``url`` (``--url``), else ``$OLLAMA_HOST`` /
``$OPENAI_BASE_URL``, else ``http://127.0.0.1:11434`` / ``http://127.0.0.1:8000/v1``; an
OpenAI key, when the server needs one, from ``$OPENAI_API_KEY``.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..registry import Entry, Registry

_FACTORIES = {
    "hf-clip": "dermbench.models.vlm.dual:hf_clip",
    "hf-siglip": "dermbench.models.vlm.dual:hf_siglip",
    "open_clip": "dermbench.models.vlm.dual:open_clip_model",
    "hf": "dermbench.models.vlm.hf_generative:hf_generative",
    "ollama": "dermbench.models.vlm.http:ollama",
    "openai": "dermbench.models.vlm.http:openai_compatible",
}

#: prefix -> (backend, kind, description)
PREFIXES: dict[str, tuple[str, str, str]] = {
    "ollama": ("ollama", "generative", "any model served by Ollama (/api/chat): ollama:<model[:tag]>"),
    "openai": ("openai", "generative", "any model behind an OpenAI-compatible server: openai:<model>"),
    "hf": ("hf", "generative", "any Hugging Face image-text-to-text model, run locally: hf:<repo>"),
    "clip": ("hf-clip", "dual", "any Hugging Face CLIP model: clip:<repo>"),
    "siglip": ("hf-siglip", "dual", "any Hugging Face SigLIP model: siglip:<repo>"),
    "open_clip": ("open_clip", "dual", "any open_clip model: open_clip:<name>[/<pretrained>] or open_clip:hf-hub:<repo>"),
}


class ZeroshotRegistry(Registry):
    """Named models plus prefix names (``ollama:<model>`` ...), resolved to entries on lookup."""

    def add_model(self, name: str, backend: str, model_id: str, description: str, *, licence: str,
                  source: str, **meta: Any) -> None:
        kind = "dual" if backend in ("hf-clip", "hf-siglip", "open_clip") else "generative"
        self.add(name, _FACTORIES[backend], description, kind=kind, backend=backend, model_id=model_id,
                 licence=licence, source=source, **meta)

    def entry(self, name: str) -> Entry:
        key = str(name).lower()
        if key in self._entries:
            return self._entries[key]
        prefix, sep, rest = str(name).partition(":")
        if sep and prefix.lower() in PREFIXES and rest.strip():
            backend, kind, description = PREFIXES[prefix.lower()]
            return Entry(name=str(name), target=_FACTORIES[backend], description=description,
                         meta={"kind": kind, "backend": backend, "model_id": rest.strip(),
                               "licence": "see the model's own licence", "source": f"{prefix}: prefix"})
        return super().entry(name)

    def __contains__(self, name: object) -> bool:
        try:
            self.entry(str(name))
        except KeyError:
            return False
        return True

    def unknown_message(self, name: str) -> str:
        prefixes = ", ".join(f"{p}:<model>" for p in PREFIXES)
        return super().unknown_message(name) + f"; or a prefix name: {prefixes}"

    def __iter__(self) -> Iterator[Entry]:
        yield from super().__iter__()
        for prefix, (backend, kind, description) in PREFIXES.items():
            yield Entry(name=f"{prefix}:<model>", target=_FACTORIES[backend], description=description,
                        meta={"kind": kind, "backend": backend, "prefix": True})


ZEROSHOT_MODELS = ZeroshotRegistry("zeroshot model")

_OPENAI = "https://github.com/openai/CLIP"
# Dual encoders [paper: CLIP ViT-B/32, CLIP ViT-L/14, MedSigLIP-448, BiomedCLIP; beyond: SigLIP, DermLIP, MONET]
ZEROSHOT_MODELS.add_model("clip_vit_b32", "hf-clip", "openai/clip-vit-base-patch32",
                          "CLIP ViT-B/32 (OpenAI) [paper]", licence="MIT", source=_OPENAI)
ZEROSHOT_MODELS.add_model("clip_vit_l14", "hf-clip", "openai/clip-vit-large-patch14",
                          "CLIP ViT-L/14 (OpenAI) [paper]", licence="MIT", source=_OPENAI)
ZEROSHOT_MODELS.add_model("medsiglip_448", "hf-siglip", "google/medsiglip-448",
                          "MedSigLIP-448 (Google Health AI Developer Foundations) [paper]",
                          licence="Health AI Developer Foundations terms of use",
                          source="https://huggingface.co/google/medsiglip-448")
ZEROSHOT_MODELS.add_model("siglip", "hf-siglip", "google/siglip-base-patch16-224",
                          "SigLIP ViT-B/16 224 (Google)", licence="Apache-2.0",
                          source="https://huggingface.co/google/siglip-base-patch16-224")
ZEROSHOT_MODELS.add_model("biomedclip", "open_clip", "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                          "BiomedCLIP PubMedBERT + ViT-B/16 (Microsoft) [paper]", licence="MIT",
                          source="https://huggingface.co/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
ZEROSHOT_MODELS.add_model("dermlip", "open_clip", "hf-hub:redlessone/DermLIP_ViT-B-16",
                          "DermLIP ViT-B/16 (Derm1M)", licence="CC-BY-NC-4.0",
                          source="https://huggingface.co/redlessone/DermLIP_ViT-B-16")
ZEROSHOT_MODELS.add_model("monet", "hf-clip", "suinleelab/monet",
                          "MONET CLIP ViT-L/14 for dermatology (Kim et al., Nat Med 2024)", licence="MIT",
                          source="https://huggingface.co/suinleelab/monet")
# Generative VLMs run locally [paper]
ZEROSHOT_MODELS.add_model("qwen2_vl_2b", "hf", "Qwen/Qwen2-VL-2B-Instruct", "Qwen2-VL-2B-Instruct [paper]",
                          licence="Apache-2.0", source="https://huggingface.co/Qwen/Qwen2-VL-2B-Instruct")
ZEROSHOT_MODELS.add_model("qwen2_5_vl_3b", "hf", "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL-3B-Instruct [paper]",
                          licence="Qwen Research License",
                          source="https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct")
ZEROSHOT_MODELS.add_model("medgemma_4b", "hf", "google/medgemma-4b-it", "MedGemma 4B instruction-tuned [paper]",
                          licence="Health AI Developer Foundations terms of use",
                          source="https://huggingface.co/google/medgemma-4b-it")
ZEROSHOT_MODELS.add_model("medgemma_1_5_4b", "hf", "google/medgemma-1.5-4b-it", "MedGemma 1.5 4B instruction-tuned [paper]",
                          licence="Health AI Developer Foundations terms of use",
                          source="https://huggingface.co/google/medgemma-1.5-4b-it")
ZEROSHOT_MODELS.add_model("phi3_5_vision", "hf", "microsoft/Phi-3.5-vision-instruct",
                          "Phi-3.5-vision-instruct [paper] (needs trust_remote_code: true)", licence="MIT",
                          source="https://huggingface.co/microsoft/Phi-3.5-vision-instruct",
                          auto_class="causal_lm", trust_remote_code=True)


def resolve_zeroshot_model(name: str) -> Entry:
    """The entry of a named or prefix model (a did-you-mean error for an unknown name)."""
    return ZEROSHOT_MODELS.entry(name)
