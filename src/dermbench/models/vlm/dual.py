"""Dual encoders (image tower + text tower): Hugging Face CLIP and SigLIP, open_clip.

Each wrapper exposes L2-normalised image and text embeddings, the model's ``logit_scale`` (and
``logit_bias`` for SigLIP-style models) and its native ``scoring``:

* **softmax** (CLIP, trained with a contrastive softmax over the batch): the text embeddings of a
  class's prompts are averaged and renormalised (prompt ensembling, Radford et al. 2021), and
  P(malignant) is the softmax of ``logit_scale * cos`` over the two classes.
* **sigmoid** (SigLIP / MedSigLIP, trained with a pairwise sigmoid loss, where each image-text pair
  is scored on its own): every prompt's match probability is ``sigmoid(logit_scale * cos +
  logit_bias)``; a class's score is the mean over its prompts, and P(malignant) is the malignant
  score normalised by the sum of both (the two sigmoid scores are kept in the predictions as
  ``score_benign`` / ``score_malignant``). Not a 2-way softmax of the logits.

Weights: a hub name is loaded from the local cache (no download is attempted when offline); a
missing weight is a clear error naming what to download. ``weights="random"`` builds the
architecture from its config with random parameters (tests, smoke runs) and the run record says so
("random init").
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..weights import WeightsNotFoundError, hf_cached_file, require_hub

#: ``weights`` value that builds the architecture with random parameters (as ``--weights random``
#: everywhere in dermbench); the run record's weights identity then reads "random init".
RANDOM_INIT = "random"
RANDOM_IDENTITY = "random init"


def resolve_device(device: str = "auto") -> Any:
    import torch

    if device in ("auto", "", None):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def _missing_weights(model_id: str, exc: Exception, how: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"cannot load weights of {model_id!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
        f"With no network, download them first on a machine that has one ({how}) and copy the cache "
        f"(~/.cache/huggingface) here, or pass --weights PATH with a local copy.")


def hf_source(model_id: str, weights: str | None) -> tuple[str, bool]:
    """Where a Hugging Face model is loaded from, and whether it is random-init. A hub name that is
    not in the local cache fails in about a second when the hub cannot be reached (no hang)."""
    if weights == RANDOM_INIT:
        return model_id, True
    source = weights or model_id
    if not Path(source).expanduser().exists() and not hf_cached_file(source, ("config.json",)):
        require_hub(f"the Hugging Face model {source!r}",
                    f"Download it where there is internet (`huggingface-cli download {source}`) and copy the "
                    f"Hugging Face cache here, or pass --weights PATH with a local copy of the model folder.")
    return source, False


def _features(output: Any) -> Any:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    return pooled if pooled is not None else output[0]


class DualEncoder(ABC):
    """Common batching and normalisation; subclasses implement the two towers."""

    scoring = "softmax"

    def __init__(self, model: Any, *, device: Any, weights: str, model_id: str, batch_size: int = 16,
                 dtype: str = "float32"):
        self.model = model.eval()
        self.device = device
        self.weights = weights
        self.model_id = model_id
        self.batch_size = batch_size
        self.dtype = dtype
        self.logit_scale = 1.0
        self.logit_bias: float | None = None

    def identity(self) -> dict[str, Any]:
        return {"backend": type(self).__name__, "model": self.model_id, "weights": self.weights,
                "scoring": self.scoring, "device": str(self.device), "batch_size": self.batch_size,
                "dtype": self.dtype}

    # -- towers (subclasses) ---------------------------------------------------------------------
    @abstractmethod
    def _pixel_batch(self, images: list[Any]) -> Any:
        """PIL images -> the model's pixel tensor (its own preprocessing)."""

    @abstractmethod
    def _image_features(self, pixels: Any) -> Any:
        """Pixel tensor -> unnormalised image embeddings."""

    @abstractmethod
    def _text_features(self, texts: list[str]) -> Any:
        """Texts -> unnormalised text embeddings."""

    # -- public ------------------------------------------------------------------------------------
    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                pixels = self._pixel_batch(list(images[start:start + self.batch_size])).to(self.device)
                feats = self._image_features(pixels).float()
                out.append(torch.nn.functional.normalize(feats, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def encode_image_paths(self, paths: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed images read with ``open_rgb``, ``batch_size`` at a time (never all in memory)."""
        from ...data.images import open_rgb

        step = batch_size or self.batch_size
        parts = [self.encode_images([open_rgb(p) for p in paths[i:i + step]]) for i in range(0, len(paths), step)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats = self._text_features(list(texts)).float()
            return torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()


class HFClipEncoder(DualEncoder):
    """Hugging Face ``CLIPModel`` (OpenAI CLIP, MONET ...): tokenizer + image processor of the repo."""

    scoring = "softmax"

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, **kw: Any):
        super().__init__(model, **kw)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.logit_scale = float(model.logit_scale.detach().exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach().item()) if bias is not None else None

    def _pixel_batch(self, images: list[Any]) -> Any:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def _image_features(self, pixels: Any) -> Any:
        return _features(self.model.get_image_features(pixel_values=pixels.to(self.model.dtype)))

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        return self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")

    def _text_features(self, texts: list[str]) -> Any:
        tokens = {k: v.to(self.device) for k, v in self._tokenize(texts).items()
                  if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**tokens))


class HFSiglipEncoder(HFClipEncoder):
    """Hugging Face ``SiglipModel`` (SigLIP, MedSigLIP): sigmoid scoring, text padded to max length
    (SigLIP was trained on ``padding="max_length"`` text and has no attention mask in its text tower)."""

    scoring = "sigmoid"

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        max_length = int(getattr(self.model.config.text_config, "max_position_embeddings", 64))
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                                return_tensors="pt")
        tokens.pop("attention_mask", None)
        return tokens


class OpenClipEncoder(DualEncoder):
    """An open_clip model (BiomedCLIP, DermLIP, any ``name/pretrained``) with its own transform and
    tokenizer; sigmoid scoring when the model carries a ``logit_bias`` (open_clip SigLIP models)."""

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, **kw: Any):
        super().__init__(model, **kw)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.logit_scale = float(model.logit_scale.detach().exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach().item()) if bias is not None else None
        self.scoring = "sigmoid" if self.logit_bias is not None else "softmax"

    def _pixel_batch(self, images: list[Any]) -> Any:
        import torch

        return torch.stack([self.preprocess(im) for im in images])

    def _image_features(self, pixels: Any) -> Any:
        return self.model.encode_image(pixels.to(next(self.model.parameters()).dtype))

    def _text_features(self, texts: list[str]) -> Any:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


# -- scoring ------------------------------------------------------------------------------------------

def p_malignant_from_embeddings(images: np.ndarray, benign_text: np.ndarray, malignant_text: np.ndarray, *,
                                scoring: str, logit_scale: float, logit_bias: float | None = None
                                ) -> tuple[np.ndarray, np.ndarray]:
    """P(malignant) per image and the per-class scores ``(n, 2)`` (benign, malignant); see module doc."""
    images = np.asarray(images, dtype=np.float64)
    if scoring == "softmax":
        classes = []
        for text in (benign_text, malignant_text):
            mean = np.asarray(text, dtype=np.float64).mean(axis=0)
            classes.append(mean / max(np.linalg.norm(mean), 1e-12))
        logits = logit_scale * images @ np.stack(classes).T
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return probs[:, 1], probs
    if scoring == "sigmoid":
        bias = 0.0 if logit_bias is None else logit_bias
        per_class = []
        for text in (benign_text, malignant_text):
            logits = logit_scale * images @ np.asarray(text, dtype=np.float64).T + bias
            per_class.append((1.0 / (1.0 + np.exp(-logits))).mean(axis=1))
        scores = np.stack(per_class, axis=1)
        total = scores.sum(axis=1)
        # Both sigmoid scores can underflow to 0 for a far-off image: then the classes are tied.
        p = np.where(total > 0, scores[:, 1] / np.where(total > 0, total, 1.0), 0.5)
        return p, scores
    raise ValueError(f"unknown dual scoring {scoring!r}; use softmax or sigmoid")


def text_embeddings(encoder: DualEncoder, prompts: Sequence[str]) -> np.ndarray:
    """Text embeddings of a prompt list, cached per (model weights, dtype, device type, prompts) unless
    random-init (float16 on a GPU and float32 on a CPU give different vectors: never mixed)."""
    from ...utils.atomic import atomic_path
    from ...utils.paths import cache_dir

    if encoder.weights in (RANDOM_INIT, RANDOM_IDENTITY):
        return encoder.encode_texts(prompts)
    key = hashlib.sha256(repr((encoder.identity()["backend"], encoder.model_id, encoder.weights, encoder.dtype,
                               getattr(encoder.device, "type", str(encoder.device)),
                               list(prompts))).encode()).hexdigest()[:24]
    path = cache_dir("zeroshot-text") / f"{key}.npy"
    if path.is_file():
        cached = np.load(path)
        if cached.shape[0] == len(prompts):
            return cached
    vectors = encoder.encode_texts(prompts)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, vectors)
    return vectors


def image_embeddings(encoder: DualEncoder, img_ids: Sequence[str], paths: Sequence[str], *, dataset_fingerprint: str,
                     split: str, batch_size: int | None = None) -> tuple[np.ndarray, bool]:
    """L2-normalised image embeddings of one split, cached per (weights, dtype, device type, dataset
    content, split, ids) so every prompt set of a model reuses them; returns (vectors, cache hit).

    This cache is separate from the probe's embedding cache on purpose: zeroshot scores must use
    the exact preprocessing of the weights (the model's own processor / open_clip transform), while
    the probe embeds the pipeline's resized uint8 pixels. Random-init models are never cached.
    """
    from ...utils.atomic import atomic_path
    from ...utils.paths import cache_dir, safe_name

    if encoder.weights in (RANDOM_INIT, RANDOM_IDENTITY) or not dataset_fingerprint:
        return encoder.encode_image_paths(list(paths), batch_size=batch_size), False
    identity = encoder.identity()
    material = {"backend": identity["backend"], "model": encoder.model_id, "weights": encoder.weights,
                "dtype": encoder.dtype, "device_type": getattr(encoder.device, "type", str(encoder.device)),
                "dataset": dataset_fingerprint, "split": split,
                "ids": hashlib.sha256("\n".join(map(str, img_ids)).encode()).hexdigest(), "format": 1}
    key = hashlib.sha256(repr(sorted(material.items())).encode()).hexdigest()[:24]
    path = cache_dir("zeroshot-image-embeddings", safe_name(encoder.model_id)) / f"{split}-{key}.npy"
    if path.is_file():
        cached = np.load(path)
        if cached.shape[0] == len(img_ids):
            return cached, True
    vectors = encoder.encode_image_paths(list(paths), batch_size=batch_size)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, vectors)
    return vectors, False


# -- factories (registry targets) ---------------------------------------------------------------------

def _torch_dtype(name: str, device: Any) -> Any:
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _hf_dual(model_id: str, settings: Any, device: str, model_cls_name: str, encoder_cls: type) -> DualEncoder:
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    dev = resolve_device(device)
    dtype = _torch_dtype(settings.dtype, dev)
    source, random_init = hf_source(model_id, settings.weights)
    model_cls = getattr(transformers, model_cls_name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        image_processor = AutoImageProcessor.from_pretrained(source)
        if random_init:
            config = transformers.AutoConfig.from_pretrained(source)
            model = model_cls.from_config(config) if model_cls_name == "AutoModel" else model_cls(config)
            weights = RANDOM_IDENTITY
        else:
            model = model_cls.from_pretrained(source, dtype=dtype)
            weights = str(Path(source).resolve()) if Path(source).exists() else source
    except OSError as exc:
        raise _missing_weights(source, exc, f"huggingface-cli download {model_id}") from exc
    model = model.to(dev).to(dtype)
    return encoder_cls(model, tokenizer, image_processor, device=dev, weights=weights, model_id=model_id,
                       batch_size=settings.batch_size, dtype=str(dtype).replace("torch.", ""))


def hf_clip(model_id: str, settings: Any, *, device: str = "auto", seed: int = 42, **meta: Any) -> HFClipEncoder:
    """Registry factory: a Hugging Face CLIP model (hub name or local folder)."""
    return _hf_dual(model_id, settings, device, "CLIPModel", HFClipEncoder)


def hf_siglip(model_id: str, settings: Any, *, device: str = "auto", seed: int = 42, **meta: Any) -> HFSiglipEncoder:
    """Registry factory: a Hugging Face SigLIP model (hub name or local folder)."""
    return _hf_dual(model_id, settings, device, "AutoModel", HFSiglipEncoder)


def open_clip_model(model_id: str, settings: Any, *, device: str = "auto", seed: int = 42,
                    **meta: Any) -> OpenClipEncoder:
    """Registry factory: ``hf-hub:org/repo``, ``arch`` or ``arch/pretrained_tag``; ``weights`` may be a
    local folder (open_clip_config.json + checkpoint), a checkpoint file, or ``random``.

    The model is built by the probe's open_clip loader (:mod:`dermbench.models.embedders.open_clip_tower`),
    so weights are found the same way in both paradigms; the text tower and the tokenizer come with it.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from ..embedders.open_clip_tower import create_open_clip

    dev = resolve_device(device)
    hub = model_id.startswith("hf-hub:")
    arch, _, tag = ("", "", "") if hub else model_id.partition("/")
    name = model_id if hub else f"open_clip:{arch}"
    weights_arg = settings.weights or (tag or None)
    model, identity = create_open_clip(name, weights_arg, None)
    if settings.weights and Path(settings.weights).expanduser().is_dir():
        tokenizer = open_clip.get_tokenizer(f"local-dir:{Path(settings.weights).expanduser()}")
    elif hub:
        config = hf_cached_file(model_id[len("hf-hub:"):], ("open_clip_config.json",))
        tokenizer = open_clip.get_tokenizer(f"local-dir:{Path(config).parent}" if config else model_id)
    else:
        tokenizer = open_clip.get_tokenizer(arch)
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    dtype = _torch_dtype(settings.dtype, dev)
    model = model.to(dev).to(dtype)
    return OpenClipEncoder(model, preprocess, tokenizer, device=dev, weights=identity, model_id=model_id,
                           batch_size=settings.batch_size, dtype=str(dtype).replace("torch.", ""))
