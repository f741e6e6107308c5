"""One probe cell: frozen backbone -> cached embeddings -> head chosen on validation -> run record.

The embeddings come from :mod:`.embed_cache` (computed once per backbone, preprocessing and
dataset; every head, seed and label fraction reuses them). The head's hyperparameters are
chosen on validation (:func:`.head_models.select_head`), the chosen model scores validation and
test, and :func:`dermbench.runs.evaluate.finalize_cell` sets the operating threshold on
validation, computes metrics with CIs and completes the record.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...runs.cell import CellSpec
from ...runs.record import RunRecorder
from .settings import ProbeSettings

#: Set by the Ray executor for a probe cell it runs without a GPU because a cell of the same backbone
#: has just embedded its images: the precision those embeddings were computed in (the cell looks them
#: up under it, and never extracts on the CPU instead).
EMBEDDINGS_PRECISION_ENV = "DERMBENCH_EMBEDDINGS_PRECISION"

if TYPE_CHECKING:
    from ...data.dataset import LesionDataset


def build_embedder(backbone: str, settings: ProbeSettings, device: str, seed: int = 42) -> Any:
    """The backbone of a probe run. A random-init backbone is drawn from torch seeded with ``seed``
    and the seed becomes part of its identity (so of the embedding cache key): each seed has its
    own random network, and a run never reuses vectors of another seed's network."""
    import torch

    from ...models import build_embedder as build_backbone

    options = dict(settings.backbone_options)
    if settings.image_size is not None:
        options["image_size"] = settings.image_size
    options.setdefault("resize_mode", settings.resize)
    study_input = _study_input(backbone, settings, options)
    crop_from = study_input.pop("crop_from", None) if study_input else None
    options.update(study_input or {})
    torch.manual_seed(seed)
    embedder = build_backbone(backbone, weights=settings.weights, **options)
    if embedder.weights_identity == "random init":
        embedder.details["random_init_seed"] = int(seed)
    if crop_from:
        embedder.crop_from = int(crop_from)
    if settings.preprocessing == "study":
        embedder.details["preprocessing"] = ("study: " + ", ".join(f"{k} {v}" for k, v in sorted(
            {**(study_input or {}), **({"crop_from": crop_from} if crop_from else {})}.items()))
            if study_input or crop_from else "study: the same as default (the study used this backbone's own)")
    return embedder.to(device)


def _study_input(backbone: str, settings: ProbeSettings, options: dict[str, Any]) -> dict[str, Any] | None:
    """The catalog entry's ``options.study_input`` (how the study fed this backbone: image_size,
    crop_from, timm global_pool ...) when ``preprocessing: study``; they may not contradict
    explicit settings."""
    if settings.preprocessing != "study":
        return None
    from ...models import resolve

    study = dict(resolve("backbone", backbone).options.get("study_input") or {})
    clash = [k for k in study if k in settings.backbone_options
             or (k == "image_size" and settings.image_size not in (None, study[k]))]
    if clash:
        raise ValueError(f"preprocessing: study fixes {', '.join(clash)} of backbone {backbone!r} "
                         f"({', '.join(f'{k}={study[k]}' for k in clash)}); leave them out of the settings")
    if study and settings.resize != "crop":
        raise ValueError(f"preprocessing: study feeds {backbone!r} a centre crop; leave resize at crop")
    return study


def embedding_request(backbone: str, settings: ProbeSettings, dataset: LesionDataset, device: str,
                      seed: int, precision: str | None = None) -> dict[str, Any]:
    """What a probe cell asks of the embedding cache, known before its backbone is built: the
    backbone and its catalog source, the weights setting (with the file stamps of a local weights
    file or folder), the build options, the precision on ``device``, the views and the dataset's
    content (see :func:`.embed_cache.find_request`)."""
    from pathlib import Path

    from ...models import resolve
    from ...models.embedders.base import compute_precision
    from ...utils.filestamp import file_stamp

    spec = resolve("backbone", backbone)
    weights = settings.weights
    stamps: list[Any] = []
    path = Path(str(weights)).expanduser()
    if weights not in ("default", "random") and path.exists():
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stamps = [[str(p.relative_to(path)) if path.is_dir() else p.name, *file_stamp(p)] for p in files]
    return {"backbone": spec.name, "framework": spec.framework, "model_id": spec.model_id,
            "default_weights": spec.default_weights, "weights": str(weights), "weights_files": stamps,
            "random_init_seed": int(seed) if weights in ("random", "random-init", "random_init") else None,
            "backbone_options": settings.backbone_options, "image_size": settings.image_size,
            "resize": settings.resize, "preprocessing": settings.preprocessing,
            "study_input": spec.options.get("study_input") if settings.preprocessing == "study" else None,
            "precision": precision or compute_precision(device),
            "train_views": settings.train_views, "augmentation": settings.augmentation if settings.train_views else None,
            "dataset": dataset.fingerprint, "splits": sorted(dataset.splits)}


def backbone_record(embedder: Any, device: str) -> dict[str, Any]:
    """What the run record says about the backbone that produced a cell's embeddings."""
    from ...models.embedders.base import compute_precision

    return {"identity": embedder.identity, "weights_identity": embedder.weights_identity,
            "licence": embedder.details.get("licence"), "source": embedder.details.get("source"),
            "dtype": (compute_precision(device) if embedder.module is not None
                      else embedder.details.get("precision", "float32"))}


def embed_dataset(embedder: Any, dataset: LesionDataset, settings: ProbeSettings, *, train_views: int = 0,
                  progress: bool = True) -> dict[str, Any]:
    """Embedding sets ``{"train": [view0, view1, ...], "validation": [view0], "test": [view0]}``."""
    from .embed_cache import embed_split

    out: dict[str, Any] = {}
    for split in dataset.splits:
        views = range(train_views + 1) if split == "train" else range(1)
        out[split] = [embed_split(embedder, dataset, split, view=v, augmentation=settings.augmentation,
                                  batch_size=settings.batch_size, workers=settings.workers, progress=progress)
                      for v in views]
    return out


def _cv_pool(dataset: LesionDataset, settings: ProbeSettings, train_ids: list[str], X_train: np.ndarray,
             y_train: np.ndarray, val_ids: list[str], X_val: np.ndarray, y_val: np.ndarray,
             seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What hyperparameters are cross-validated on when validation is tiny (``select_head``):
    the training images of the label fraction (view 0, before balancing) and the validation
    images, with group keys that keep a patient, lesion or likely same-lesion group in one fold."""
    from ...data.splits import group_keys
    from .trainset import label_subset

    keep = label_subset(y_train, fraction=settings.label_fraction, k_shot=settings.k_shot, seed=seed)
    rows = [dataset.split("train").set_index("img_id").loc[[train_ids[i] for i in keep]],
            dataset.split("validation").set_index("img_id").loc[val_ids]]
    frame = pd.concat(rows).reset_index()
    keys, _used, _without = group_keys(frame, ("patient_id", "lesion_id", "similar_group"))
    return (np.concatenate([X_train[keep], X_val]), np.concatenate([y_train[keep], y_val]),
            None if keys is None else np.asarray(keys))


def _labels_for(dataset: LesionDataset, split: str, img_ids: list[str]) -> np.ndarray:
    frame = dataset.split(split).set_index("img_id")
    return frame.loc[img_ids, "label"].to_numpy().astype(int)


def run_cell(spec: CellSpec, recorder: RunRecorder) -> dict[str, Any]:
    """Embed, fit the head chosen on validation, score validation and test; returns the metrics
    written to ``metrics.json``."""
    from ...runs.datasets import load_cell_dataset
    from ...utils.device import activate_device, choose_device
    from ...runs.evaluate import calibrate_scores, finalize_cell, without_unreadable
    from .embed_cache import find_request, remember_request
    from .head_models import get_head, select_head
    from .head_store import head_bytes

    settings = ProbeSettings(**spec.settings)
    get_head(settings.head)  # an unknown head fails before any embedding work
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = load_cell_dataset(spec)
    for split in ("train", "validation", "test"):
        if split not in dataset.splits or dataset.split(split).empty:
            raise ValueError(f"dataset {dataset.name!r} has no usable {split} images; the probe needs train, "
                             f"validation (head selection, threshold) and test")
    timing["load_dataset_s"] = round(time.perf_counter() - t0, 3)

    device = activate_device(choose_device(spec.device))
    # Cached embeddings are found from what the cell asks for: the backbone is built only when some
    # vectors are missing (a multi-GB model is not loaded, nor a GPU touched, to fit a head).
    precision = os.environ.get(EMBEDDINGS_PRECISION_ENV) or None
    request = embedding_request(spec.model, settings, dataset, device, spec.seed, precision=precision)
    cached = find_request(spec.model, request)
    if cached is None and precision:
        raise RuntimeError(f"this cell was given no GPU because its embeddings ({precision}) were cached by a cell of "
                           f"the same backbone, but they are not there now; run it again (it then asks for its GPU)")
    if cached is not None:
        sets, backbone = cached
        timing["build_backbone_s"] = 0.0
        timing["embed_s"] = 0.0
    else:
        t0 = time.perf_counter()
        embedder = build_embedder(spec.model, settings, device, seed=spec.seed)
        timing["build_backbone_s"] = round(time.perf_counter() - t0, 3)

        t0 = time.perf_counter()
        sets = embed_dataset(embedder, dataset, settings, train_views=settings.train_views, progress=not spec.quiet)
        timing["embed_s"] = round(time.perf_counter() - t0, 3)
        backbone = backbone_record(embedder, device)
        remember_request(spec.model, request, sets, backbone)
    embedding_record = {split: [{"view": s.view, "key": s.key, "cache_hit": s.hit, "n": len(s.img_ids),
                                 "images_per_s": round(s.images_per_second, 2)} for s in views]
                        for split, views in sets.items()}

    # train: view 0 decides which images exist; augmented views share its row order
    train_views = sets["train"]
    train_ids = train_views[0].img_ids
    for view in train_views[1:]:
        if view.img_ids != train_ids:
            raise RuntimeError("augmented train views do not share the row order of view 0; clear the embedding cache")
    y_train_images = _labels_for(dataset, "train", train_ids)

    from .trainset import build_training_set, transform_features

    def features(vectors: np.ndarray) -> np.ndarray:
        return transform_features(vectors, settings.feature_transform)

    X_train, y_train, train_record = build_training_set([features(v.vectors) for v in train_views], y_train_images,
                                                        settings, seed=spec.seed)
    val = sets["validation"][0]
    y_val = _labels_for(dataset, "validation", val.img_ids)

    t0 = time.perf_counter()
    if settings.head_preset == "dermbench":
        selection = select_head(settings.head, X_train, y_train, features(val.vectors), y_val,
                                class_weight=settings.class_weight, seed=spec.seed, metric=settings.selection_metric,
                                grid=settings.grid or None, options=settings.head_options,
                                cv_pool=_cv_pool(dataset, settings, train_ids, features(train_views[0].vectors),
                                                 y_train_images, val.img_ids, features(val.vectors), y_val, spec.seed))
    else:
        selection = _study_selection(settings, X_train, y_train, features(val.vectors), y_val, seed=spec.seed)
    timing["head_fit_s"] = round(time.perf_counter() - t0, 3)

    scores: dict[str, pd.DataFrame] = {}
    for split in ("validation", "test"):
        emb = sets[split][0]
        X = features(emb.vectors)
        scores[split] = pd.DataFrame({"img_id": emb.img_ids, "p_malignant": selection.model.predict_proba(X)})
        if settings.head_preset != "dermbench":  # the study's own hard decision (estimator.predict, MLP P > 0.5)
            scores[split]["study_pred"] = np.where(selection.model.study_predict(X) == 1, "malignant", "benign")
    # Images the image cache could not decode are excluded and reported, as in every paradigm.
    errors = [e for views in (train_views, sets["validation"], sets["test"]) for v in views for e in v.errors]
    dataset, excluded = without_unreadable(dataset, errors)
    scores, calibration = calibrate_scores(dataset, scores, settings.calibration)
    # the fitted head, for transfer evaluations and `dermbench predict` (safe format + sha256 in the record)
    head_name, head_data, head_file = head_bytes(selection.model)
    recorder.save_bytes(head_name, head_data)

    extra = {
        "head": selection.record(),
        "head_file": head_file,
        "class_weight": settings.class_weight,
        "feature_transform": settings.feature_transform,
        "head_imbalance_handling": _imbalance_note(settings),
        "head_preset": settings.head_preset,
        "preprocessing": settings.preprocessing,
        "training_set": train_record,
        "backbone": {**backbone["identity"], "licence": backbone.get("licence"), "source": backbone.get("source"),
                     "loaded": cached is None},
        "embeddings": embedding_record,
    }
    if settings.head_preset != "dermbench":
        extra["study_head"] = getattr(selection, "study", None)
        from ...runs.study import study_metrics_record

        extra["study_metrics"] = study_metrics_record(
            dataset, scores, n_boot=spec.n_boot, seed=spec.seed,
            rule="the study's estimators' own predict (SVC: its decision function; MLP: P > 0.5)")
    provenance = {"weights": backbone["weights_identity"], "device": device, "dtype": backbone["dtype"],
                  "batch_size": settings.batch_size, "backbone": spec.model}
    return finalize_cell(recorder, dataset, scores, threshold_policy=spec.threshold_policy, n_boot=spec.n_boot,
                         seed=spec.seed, provenance=provenance, timing=timing, extra=extra, cell=spec.to_dict(),
                         excluded_images=excluded, calibration=calibration)


def _study_selection(settings: ProbeSettings, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
                     y_val: np.ndarray, *, seed: int) -> Any:
    """The study's head (:mod:`.study_heads`) as a :class:`~.head_models.Selection` for the record."""
    from .head_models import Selection, _score
    from .study_heads import fit_study_head

    model, record = fit_study_head(settings.head, settings.head_preset, X_train, y_train, X_val, y_val, seed=seed,
                                   trials=settings.optuna_trials, options=settings.head_options)
    score = _score(settings.selection_metric, np.asarray(y_val).astype(int), model.predict_proba(X_val))
    search = record.get("search") or {}
    trials = [{"params": t["params"], **{k: v for k, v in t.items() if k != "params"}}
              for t in search.get("history", [])]
    selection = Selection(head=settings.head, model=model, params=record["params"],
                          validation_score=None if np.isnan(score) else float(score),  # type: ignore[arg-type]
                          metric=settings.selection_metric, trials=trials, fit_seconds=record["fit_seconds"])
    # what the study's preset did, beside the usual head record (the search history is its "grid")
    selection.study = {k: v for k, v in record.items() if k not in ("training",)}  # type: ignore[attr-defined]
    if search:
        selection.study["search"] = {k: v for k, v in search.items() if k != "history"}  # type: ignore[attr-defined]
    return selection


def _imbalance_note(settings: ProbeSettings) -> str:
    from .head_models import get_head
    from .study_heads import IMBALANCE

    if settings.head_preset != "dermbench":
        return IMBALANCE[settings.head]
    spec = get_head(settings.head)
    if settings.class_weight == "none":
        return "none"
    return spec.imbalance


def embeddings_cached(spec: CellSpec, precision: str) -> bool:
    """Whether every embedding ``spec`` needs is in the cache, computed in ``precision`` (no backbone
    built, no GPU touched): the Ray executor's test before it runs the cell without a GPU."""
    from ...runs.datasets import load_cell_dataset
    from .embed_cache import find_request

    settings = ProbeSettings(**spec.settings)
    dataset = load_cell_dataset(spec)
    request = embedding_request(spec.model, settings, dataset, "cpu", spec.seed, precision=precision)
    return find_request(spec.model, request) is not None
