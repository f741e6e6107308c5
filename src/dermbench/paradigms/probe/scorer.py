"""A complete probe cell's backbone and saved head, scoring other images (:mod:`dermbench.runs.scorer`).

The backbone is built again from the cell's spec (same model, weights, preprocessing and, for a
random-init backbone, the same seed) and checked against the identity the cell recorded; the head
is the one the cell saved (:mod:`.head_store`: safe format, sha256 checked). A dataset is embedded
through the embedding cache (its vectors are reused by every cell of that backbone), image files
through the same decoding (:func:`dermbench.data.pipeline.decode.load_image` at the backbone's
resize policy) and the same batch normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...data.dataset import LesionDataset
from ...data.exclusions import Exclusion
from ...errors import CacheError, ImageReadError
from ...runs.cell import CellSpec
from ...utils.console import get_logger
from .settings import ProbeSettings

log = get_logger("probe")


class ProbeScorer:
    def __init__(self, cell: Path, spec: CellSpec, metrics: dict[str, Any], device: str = "auto"):
        from ...utils.device import activate_device, choose_device
        from .cell import build_embedder
        from .head_store import load_head

        extra = metrics.get("extra") or {}
        self.cell, self.spec = cell, spec
        self.settings = ProbeSettings(**spec.settings)
        self.head_file = extra.get("head_file") or {}
        self.head = load_head(cell, self.head_file)  # sha256 checked first: a wrong file is refused early
        self.embedder = build_embedder(spec.model, self.settings, activate_device(choose_device(device)),
                                       seed=spec.seed)  # cuda:N current before any CUDA use
        self.notes = _compare_identity(extra.get("backbone") or {}, self.embedder.identity)

    def _p(self, vectors: np.ndarray) -> np.ndarray:
        from .trainset import transform_features

        return np.asarray(self.head.predict_proba(transform_features(vectors, self.settings.feature_transform)),
                          dtype=np.float64)

    def score_dataset(self, dataset: LesionDataset, splits: tuple[str, ...], *, progress: bool = True
                      ) -> tuple[dict[str, pd.DataFrame], list[Exclusion]]:
        from .embed_cache import embed_split

        out: dict[str, pd.DataFrame] = {}
        errors: list[Exclusion] = []
        for split in splits:
            emb = embed_split(self.embedder, dataset, split, view=0, augmentation=self.settings.augmentation,
                              batch_size=self.settings.batch_size, workers=self.settings.workers, progress=progress)
            out[split] = pd.DataFrame({"img_id": emb.img_ids, "p_malignant": self._p(emb.vectors)})
            errors += emb.errors
        return out, errors

    def score_files(self, paths: list[str], *, progress: bool = True
                    ) -> tuple[dict[int, float], dict[int, tuple[str, str]]]:
        import torch

        from ...data.pipeline.decode import load_image
        from ...utils.console import progress as progress_bar

        scores: dict[int, float] = {}
        failed: dict[int, tuple[str, str]] = {}
        size = max(1, int(self.settings.batch_size))
        with progress_bar(len(paths), f"predict {self.embedder.name}", enabled=progress) as bar:
            for start in range(0, len(paths), size):
                batch, positions = [], []
                for k in range(start, min(start + size, len(paths))):
                    try:
                        pixels = load_image(paths[k], self.embedder.policy)
                    except ImageReadError as err:
                        failed[k] = (err.reason, err.detail)
                        continue
                    batch.append(torch.from_numpy(pixels).permute(2, 0, 1))
                    positions.append(k)
                if batch:
                    p = self._p(self.embedder(torch.stack(batch)))
                    scores.update(zip(positions, (float(v) for v in p)))
                bar.update(min(start + size, len(paths)) - start)
        return scores, failed

    def describe(self) -> dict[str, Any]:
        return {"paradigm": "probe", "backbone": self.embedder.identity, "head": self.settings.head,
                "head_file": self.head_file, "feature_transform": self.settings.feature_transform,
                "notes": self.notes}


def _compare_identity(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Refuse a backbone that is not the one the cell embedded with; the arithmetic (``compute``:
    float32 on a CPU, autocast on a GPU) may differ and is only noted."""
    ignore = {"licence", "source", "description", "compute", "loaded"}  # loaded: whether the cell built it
    differ = sorted(k for k in (set(recorded) | set(current)) - ignore if recorded.get(k) != current.get(k))
    if recorded and differ:
        details = "; ".join(f"{k}: recorded {recorded.get(k)!r}, now {current.get(k)!r}" for k in differ[:4])
        raise CacheError(f"the backbone built now is not the one the cell used ({details}); are its weights "
                         f"the same on this machine?")
    if recorded.get("compute") and recorded.get("compute") != current.get("compute"):
        return [f"the cell embedded with {recorded['compute']}, this run with {current.get('compute')}"]
    return []


def load_scorer(cell: Path, spec: CellSpec, metrics: dict[str, Any], device: str = "auto") -> ProbeScorer:
    return ProbeScorer(cell, spec, metrics, device)
