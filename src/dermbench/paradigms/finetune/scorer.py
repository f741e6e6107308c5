"""A complete finetune cell's best checkpoint, scoring other images (:mod:`dermbench.runs.scorer`).

The classifier is built again from the cell's spec (same model, weights, freezing, dropout and
working size: the same architecture and preprocessing constants) and the best epoch's weights are
loaded from the cell's ``work/`` folder with ``torch.load(weights_only=True)`` after their sha256 is
checked against the run record. Scoring goes through the cell's own path: a dataset through its
image cache and loader, image files through the same decoding
(:func:`dermbench.data.pipeline.decode.load_image` at the cell's resize policy); both through
:func:`.train.predict` with the cell's normalisation and test-time augmentation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ...data.dataset import LesionDataset
from ...data.exclusions import Exclusion
from ...errors import CacheError, ImageReadError
from ...runs.cell import CellSpec
from .settings import FinetuneSettings


class FinetuneScorer:
    def __init__(self, cell: Path, spec: CellSpec, metrics: dict[str, Any], device: str = "auto"):
        import torch

        from ...data.pipeline.decode import ResizePolicy
        from ...models import build_classifier
        from ...utils.device import activate_device, choose_device
        from .train import amp_dtype, load_checkpoint

        extra = metrics.get("extra") or {}
        self.settings = settings = FinetuneSettings(**spec.settings)
        self.checkpoint = checkpoint_file(cell, extra)
        state = load_checkpoint(self.checkpoint)  # torch.load(weights_only=True)
        self.device = torch.device(activate_device(choose_device(device)))  # cuda:N current before any CUDA use
        built = build_classifier(spec.model, weights=settings.weights, freeze=settings.freeze_backbone,
                                 drop_rate=settings.drop_rate, image_size=settings.image_size)
        built.model.load_state_dict(state["model"])
        self.model = built.model.to(self.device).eval()
        self.mean, self.std = tuple(built.data_config["mean"]), tuple(built.data_config["std"])
        self.policy = ResizePolicy(settings.image_size, settings.resize)
        self.autocast = amp_dtype(self.device, settings.amp)
        self.channels_last = settings.channels_last and self.device.type == "cuda"
        self.batch_size = settings.eval_batch_size or settings.batch_size
        self.described = {"paradigm": "finetune", "model": spec.model, "weights": built.weights_identity,
                          "checkpoint": {**(extra.get("checkpoint") or {}), "path": str(self.checkpoint)},
                          "tta": settings.tta, "resize": self.policy.key(), "notes": []}
        recorded = (metrics.get("provenance") or {}).get("dtype")
        now = "float32" if self.autocast is None else f"autocast {str(self.autocast).replace('torch.', '')}"
        if recorded and recorded != now:
            self.described["notes"].append(f"the cell predicted in {recorded}, this run in {now}")

    def _predict(self, loader: Any) -> pd.DataFrame:
        from ...data.pipeline.loaders import eval_transform
        from .train import predict

        frame, _loss = predict(self.model, loader, self.device, amp=self.autocast, channels_last=self.channels_last,
                               tta=self.settings.tta, normalize=eval_transform(self.mean, self.std))
        return frame

    def score_dataset(self, dataset: LesionDataset, splits: tuple[str, ...], *, progress: bool = True
                      ) -> tuple[dict[str, pd.DataFrame], list[Exclusion]]:
        from ...data.pipeline.image_cache import build_image_cache
        from ...data.pipeline.loaders import keep_uint8, make_loader

        cache = build_image_cache(dataset, self.policy, progress=progress)
        out = {}
        for split in splits:
            loader = make_loader(dataset, split, policy=self.policy, transform=keep_uint8, batch_size=self.batch_size,
                                 workers=0, device=self.device, progress=progress)
            out[split] = self._predict(loader)[["img_id", "p_malignant"]]
        return out, [e for e in cache.errors if e.split in splits]

    def score_files(self, paths: list[str], *, progress: bool = True
                    ) -> tuple[dict[int, float], dict[int, tuple[str, str]]]:
        import torch

        from ...data.pipeline.decode import load_image
        from ...utils.console import progress as progress_bar

        scores: dict[int, float] = {}
        failed: dict[int, tuple[str, str]] = {}
        with progress_bar(len(paths), "predict", enabled=progress) as bar:
            for start in range(0, len(paths), self.batch_size):
                batch = []
                for k in range(start, min(start + self.batch_size, len(paths))):
                    try:
                        pixels = load_image(paths[k], self.policy)
                    except ImageReadError as err:
                        failed[k] = (err.reason, err.detail)
                        continue
                    batch.append({"image": torch.from_numpy(pixels).permute(2, 0, 1), "label": 0,
                                  "img_id": str(k), "index": k})
                if batch:
                    loader = torch.utils.data.DataLoader(batch, batch_size=len(batch), shuffle=False)
                    frame = self._predict(loader)
                    scores.update(zip((int(i) for i in frame["img_id"]), (float(p) for p in frame["p_malignant"])))
                bar.update(min(start + self.batch_size, len(paths)) - start)
        return scores, failed

    def describe(self) -> dict[str, Any]:
        return self.described


def checkpoint_file(cell: Path, extra: dict[str, Any]) -> Path:
    """The best epoch's weights of a finetune cell, checked against the sha256 its record holds."""
    from ...utils.filestamp import sha256_file
    from .train import BEST_WEIGHTS

    record = extra.get("checkpoint") or {}
    best_epoch = record.get("epoch") or (extra.get("training") or {}).get("best_epoch")
    name = record.get("file") or (f"work/{BEST_WEIGHTS.format(epoch=int(best_epoch))}" if best_epoch else None)
    if not name:
        raise CacheError(f"the run record in {cell} names no best checkpoint (extra.checkpoint); re-run the cell")
    path = (cell / name).resolve()
    if not path.is_relative_to(cell.resolve()) or not path.is_file():
        raise CacheError(f"the cell's best checkpoint {cell / name} is missing; re-run the cell (dermbench finetune "
                         f"... --force)")
    if record.get("sha256") and sha256_file(path) != record["sha256"]:
        raise CacheError(f"{path} is not the checkpoint this cell recorded (sha256 differs); refusing to load it")
    return path


def load_scorer(cell: Path, spec: CellSpec, metrics: dict[str, Any], device: str = "auto") -> FinetuneScorer:
    return FinetuneScorer(cell, spec, metrics, device)
