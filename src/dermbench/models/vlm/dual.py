"""What every dual encoder is (image tower + text tower), and how its similarities become P(malignant).

The frameworks implement :class:`DualEncoder` (Hugging Face CLIP / SigLIP in
:mod:`dermbench.models.frameworks.hf.dual`, open_clip in :mod:`dermbench.models.frameworks.open_clip`).
Each exposes L2-normalised image and text embeddings, the model's ``logit_scale`` (and
``logit_bias`` for SigLIP-style models) and its native ``scoring``:

* **softmax** (CLIP, trained with a contrastive softmax over the batch): the text embeddings of a
  class's prompts are averaged and renormalised (prompt ensembling, Radford et al. 2021), and
  P(malignant) is the softmax of ``logit_scale * cos`` over the two classes.
* **sigmoid** (SigLIP / MedSigLIP, trained with a pairwise sigmoid loss, where each image-text pair
  is scored on its own): every prompt's match probability is ``sigmoid(logit_scale * cos +
  logit_bias)``; a class's score is the mean over its prompts, and P(malignant) is the malignant
  score normalised by the sum of both (the two sigmoid scores are kept in the predictions as
  ``score_benign`` / ``score_malignant``). Not a 2-way softmax of the logits.

Image and text embeddings are cached per weights, dtype and device type (never for random-init
models, whose run record says "random init").
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import numpy as np

#: ``weights`` value that builds the architecture with random parameters (as ``--weights random``
#: everywhere in dermbench); the run record's weights identity then reads "random init".
RANDOM_INIT = "random"
RANDOM_IDENTITY = "random init"


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

    def image_preprocessor(self) -> Callable[[Any], Any]:
        """One PIL image -> the model's pixel tensor ``[3, H, W]``: what the extraction loader's workers
        run (a light, picklable object: the model itself never goes to a worker). Subclasses return
        their processor; this default runs :meth:`_pixel_batch` on one image."""
        return lambda image: self._pixel_batch([image])[0]

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

    def encode_image_paths(self, paths: Sequence[str], batch_size: int | None = None,
                           workers: int | None = None) -> np.ndarray:
        """Embed images read with ``open_rgb``, ``batch_size`` at a time (never all in memory). The
        images are decoded and preprocessed in ``workers`` DataLoader processes (default: one per
        CPU thread this cell has beyond the main one, ``torch.get_num_threads() - 1``) while the model
        embeds the previous batch; 0 does it all in this process."""
        import torch
        from torch.utils.data import DataLoader

        step = batch_size or self.batch_size
        workers = max(0, torch.get_num_threads() - 1) if workers is None else int(workers)
        workers = min(workers, max(1, -(-len(paths) // step))) if paths else 0
        kwargs: dict[str, Any] = {}
        if workers > 0:
            import multiprocessing
            import sys

            kwargs.update(num_workers=workers, prefetch_factor=2)
            if sys.platform.startswith("linux"):  # fork: the processor is not pickled; workers never touch CUDA
                kwargs["multiprocessing_context"] = multiprocessing.get_context("fork")
        loader = DataLoader(_PreprocessedImages(list(paths), self.image_preprocessor()), batch_size=step,
                            shuffle=False, pin_memory=getattr(self.device, "type", str(self.device)) == "cuda",
                            **kwargs)
        parts = []
        with torch.inference_mode():
            for pixels in loader:
                feats = self._image_features(pixels.to(self.device, non_blocking=True)).float()
                parts.append(torch.nn.functional.normalize(feats, dim=-1).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats = self._text_features(list(texts)).float()
            return torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()


class _PreprocessedImages:
    """Map-style dataset: image ``i`` of ``paths`` read with ``open_rgb`` and run through ``preprocess``."""

    def __init__(self, paths: list[str], preprocess: Callable[[Any], Any]):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from ...data.images import open_rgb

        return self.preprocess(open_rgb(self.paths[i]))


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
