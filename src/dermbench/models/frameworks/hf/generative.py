"""Local generative VLMs with Hugging Face transformers: chat template, batched greedy generation.

The model is loaded with ``AutoModelForImageTextToText`` (Qwen2-VL, Qwen2.5-VL, MedGemma, LLaVA,
Llama 3.2 Vision, SmolVLM/Idefics3 ...) and its ``AutoProcessor``; each request becomes a chat
``[system?, user: [image, text]]`` rendered by the processor's chat template, and a batch is
generated greedily (``do_sample=False``) with left padding. When ``logprobs`` is on, the raw
logits of every generated step are kept (``output_logits``) and turned into per-token
log-probabilities with the top alternatives - the same shape the servers return - so the label
token's malignant-vs-benign probability gives a continuous P(malignant).

Phi-3.5-vision predates the image-text-to-text API: its catalog entry sets
``auto_class="causal_lm"`` (``AutoModelForCausalLM`` with ``trust_remote_code``) and its
``<|image_1|>`` prompt convention, one image per call.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import torch
import transformers

from ....data.images import ImageReadError
from ....utils.device import torch_dtype
from ...spec import ModelSpec
from ...vlm.base import TokenLogprob, VLMAnswer, VLMRequest, load_request_image
from .common import RANDOM_IDENTITY, hf_source, loaded_from, missing_weights


class HFGenerativeBackend:
    def __init__(self, model: Any, processor: Any, *, model_id: str, weights: str, device: Any,
                 batch_size: int = 4, max_new_tokens: int = 256, logprobs: bool = True, top_logprobs: int = 5,
                 max_image_side: int | None = 1024, dtype: str = "float32", style: str = "chat"):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"  # decoder-only generation continues the right end
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model_id = model_id
        self.weights = weights
        self.device = device
        self.batch_size = 1 if style == "phi3v" else int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.logprobs = bool(logprobs)
        self.top_logprobs = int(top_logprobs)
        self.max_image_side = max_image_side
        self.dtype = dtype
        self.style = style
        self._system_supported: bool | None = None

    def identity(self) -> dict[str, Any]:
        return {"backend": "hf", "model": self.model_id, "weights": self.weights, "device": str(self.device),
                "batch_size": self.batch_size, "dtype": self.dtype, "max_new_tokens": self.max_new_tokens}

    # -- prompt ---------------------------------------------------------------------------------------
    def _messages(self, request: VLMRequest, with_system: bool) -> list[dict[str, Any]]:
        prompt = request.prompt
        if request.system and (not with_system or self.style == "phi3v"):
            prompt = f"{request.system.strip()}\n\n{prompt}"
        if self.style == "phi3v":
            return [{"role": "user", "content": f"<|image_1|>\n{prompt}"}]
        messages: list[dict[str, Any]] = []
        if request.system and with_system:
            messages.append({"role": "system", "content": [{"type": "text", "text": request.system.strip()}]})
        messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]})
        return messages

    def render(self, request: VLMRequest) -> str:
        """The chat-templated prompt. A template without a system role gets the system text
        prepended to the user message instead (decided once, on the first request)."""
        chat_processor = hasattr(self.processor, "apply_chat_template") and self.style != "phi3v"
        template_owner = self.processor if chat_processor else self.tokenizer
        if request.system and self._system_supported is not False and self.style != "phi3v":
            try:
                text = template_owner.apply_chat_template(self._messages(request, True), add_generation_prompt=True,
                                                          tokenize=False)
                self._system_supported = True
                return text
            except Exception:  # jinja raises its own TemplateError ("System role not supported")
                self._system_supported = False
        return template_owner.apply_chat_template(self._messages(request, False), add_generation_prompt=True,
                                                  tokenize=False)

    # -- generation -------------------------------------------------------------------------------------
    def answer_all(self, requests: Iterable[VLMRequest], on_answer: Callable[[VLMAnswer], None]) -> None:
        """Answer in batches; an image that cannot be read is a failed answer, not a stopped run."""
        batch: list[tuple[VLMRequest, Any]] = []

        def flush() -> None:
            if batch:
                for answer in self._generate([r for r, _ in batch], [im for _, im in batch]):
                    on_answer(answer)
                batch.clear()

        for request in requests:
            try:
                image = load_request_image(request.image_path, self.max_image_side)
            except (OSError, ImageReadError) as exc:
                on_answer(VLMAnswer(request.img_id, error=f"{type(exc).__name__}: {exc}", attempts=0))
                continue
            batch.append((request, image))
            if len(batch) == self.batch_size:
                flush()
        flush()

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        if self.tokenizer.pad_token_id is not None:
            ids.add(int(self.tokenizer.pad_token_id))
        return ids

    def _generate(self, batch: list[VLMRequest], images: list[Any] | None = None) -> list[VLMAnswer]:
        t0 = time.perf_counter()
        if images is None:
            images = [load_request_image(r.image_path, self.max_image_side) for r in batch]
        texts = [self.render(r) for r in batch]
        if self.style == "phi3v":
            inputs = self.processor(texts[0], images, return_tensors="pt")
        else:
            # one list per prompt: Gemma 3 (MedGemma), Idefics3, Mllama need the nesting; flat-list
            # processors (Qwen2-VL, LLaVA) flatten it
            inputs = self.processor(text=texts, images=[[image] for image in images], padding=True,
                                    return_tensors="pt")
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      num_beams=1, output_logits=self.logprobs, return_dict_in_generate=True,
                                      pad_token_id=self.tokenizer.pad_token_id)
        prompt_len = inputs["input_ids"].shape[1]
        generated = out.sequences[:, prompt_len:].cpu()
        eos = self._eos_ids()
        seconds = (time.perf_counter() - t0) / len(batch)
        answers = []
        for i, request in enumerate(batch):
            ids = generated[i].tolist()
            end = next((t for t, token_id in enumerate(ids) if token_id in eos), len(ids))
            ids = ids[:end]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            tokens = self._token_logprobs(out.logits, i, ids) if self.logprobs and out.logits is not None else None
            answers.append(VLMAnswer(request.img_id, text=text, tokens=tokens, attempts=1, seconds=seconds))
        return answers

    def _token_logprobs(self, logits: tuple[Any, ...], row: int, ids: list[int]) -> list[TokenLogprob]:
        """Per generated token: its text (incremental decode, so the texts concatenate to the
        answer), its log-probability and the ``top_logprobs`` best alternatives."""
        tokens = []
        previous = ""
        for step, token_id in enumerate(ids):
            logprobs = torch.log_softmax(logits[step][row].float(), dim=-1)
            top = torch.topk(logprobs, k=min(self.top_logprobs, logprobs.shape[-1]))
            decoded = self.tokenizer.decode(ids[:step + 1], skip_special_tokens=True)
            piece, previous = decoded[len(previous):], decoded
            alternatives = tuple((self.tokenizer.decode([int(j)]), float(lp))
                                 for lp, j in zip(top.values.tolist(), top.indices.tolist()))
            tokens.append(TokenLogprob(piece, float(logprobs[token_id]), alternatives))
        return tokens


def _straight_onto(device: Any) -> dict[str, Any]:
    """``from_pretrained`` options that load the weights straight onto a GPU (``device_map``, which
    needs accelerate, the ``[hf]`` extra): a 4B VLM never sits in host memory as a whole. Without
    accelerate or on the CPU: none (the model is moved after loading)."""
    if device.type != "cuda":
        return {}
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        return {}
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"device_map": {"": f"cuda:{index}"}}


def _on_device(model: Any, device: Any) -> bool:
    parameter = next(iter(model.parameters()), None)
    if parameter is None:
        return True
    here = parameter.device
    return here.type == device.type and (device.index is None or here.index == device.index)


def build_generative(spec: ModelSpec, settings: Any, *, weights: str, device: str,
                     seed: int = 42) -> HFGenerativeBackend:
    """A Hugging Face VLM from the local cache, a local folder (``weights``), or ``weights="random"``
    (its config, random parameters; smoke runs only). ``options.auto_class`` ``causal_lm`` loads
    pre-image-text-to-text models (Phi-3.5-vision) with ``AutoModelForCausalLM``."""
    auto_class = spec.options.get("auto_class", "image_text_to_text")
    trust = bool(settings.trust_remote_code or spec.options.get("trust_remote_code", False))
    dev = torch.device(device)
    dtype = torch_dtype(settings.dtype, dev, fp16_safe=spec.fp16_safe)
    source, random_init = hf_source(spec.model_id, weights)
    model_cls = (transformers.AutoModelForCausalLM if auto_class == "causal_lm"
                 else transformers.AutoModelForImageTextToText)
    torch.manual_seed(seed)
    try:
        processor = transformers.AutoProcessor.from_pretrained(source, trust_remote_code=trust)
        # Built or loaded in ``dtype``, never cast afterwards: ``.to(dtype)`` would also cast what
        # transformers keeps in float32 on purpose (rotary ``inv_freq`` buffers, norms of some models).
        if random_init:
            config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=trust)
            model = model_cls.from_config(config, trust_remote_code=trust, dtype=dtype)
            identity = RANDOM_IDENTITY
        else:
            model = model_cls.from_pretrained(source, dtype=dtype, trust_remote_code=trust,
                                              **_straight_onto(dev))
            identity = loaded_from(source)
    except OSError as exc:
        raise missing_weights(source, exc, f"huggingface-cli download {spec.model_id}") from exc
    if not _on_device(model, dev):
        model = model.to(dev)
    return HFGenerativeBackend(model, processor, model_id=spec.model_id, weights=identity, device=dev,
                               batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens,
                               logprobs=settings.logprobs, top_logprobs=settings.top_logprobs,
                               max_image_side=settings.max_image_side, dtype=str(dtype).replace("torch.", ""),
                               style="phi3v" if auto_class == "causal_lm" else "chat")
