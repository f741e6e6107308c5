"""One finetune cell: (model, dataset, seed, balancing) -> trained model -> run record.

Steps: load the dataset; build the classifier through the one factory (weights offline, or a
clear error); build the image cache once at the working resolution; train with
:func:`~dermbench.paradigms.finetune.train.fit` (checkpoints in the cell's ``work/`` folder, so a
killed cell resumes); score validation and test with the best epoch's weights (optionally with
flip TTA); list the misclassified test images for error analysis; hand the scores to
:func:`~dermbench.runs.evaluate.finalize_cell`, which picks the operating threshold on validation
and writes the record.

Files the cell adds to the run record: ``train_log.csv`` (per epoch: losses, validation AUROC,
learning rate, time), ``training_curves.png``, ``false_benign.csv`` and ``false_malignant.csv``
(test images on the wrong side of the operating threshold, most confident errors first).
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from ...runs.cell import CellSpec
from ...runs.evaluate import calibrate_scores, operating_threshold, without_unreadable
from ...runs.record import RunRecorder
from ...utils.console import get_logger
from .settings import FinetuneSettings

logger = get_logger("finetune")

ERROR_FILES = {"false_benign": "false_benign.csv", "false_malignant": "false_malignant.csv"}


def misclassified(frame: pd.DataFrame, threshold: float, paths: pd.Series | None = None) -> dict[str, pd.DataFrame]:
    """Test images on the wrong side of ``threshold``: malignant called benign (false benign,
    the clinically costly error) and benign called malignant (false malignant), each sorted with
    the most confident mistakes first."""
    out = {}
    pred = (frame["p_malignant"] >= threshold).astype(int)
    for kind, mask, ascending in (("false_benign", (frame["label"] == 1) & (pred == 0), True),
                                  ("false_malignant", (frame["label"] == 0) & (pred == 1), False)):
        part = frame.loc[mask, ["img_id", "label", "p_malignant"]].copy()
        if paths is not None:
            part["path"] = part["img_id"].map(paths)
        part["threshold"] = threshold
        out[kind] = part.sort_values("p_malignant", ascending=ascending, kind="mergesort").reset_index(drop=True)
    return out


def _checkpoint_record(work: Any, best_epoch: int) -> dict[str, Any]:
    """The best epoch's weights file (kept in ``work/``) and its sha256, for transfer evaluations
    and ``dermbench predict`` (which load it with ``torch.load(weights_only=True)`` after checking it)."""
    from ...utils.filestamp import sha256_file
    from .train import BEST_WEIGHTS

    path = work / BEST_WEIGHTS.format(epoch=int(best_epoch))
    return {"file": f"{work.name}/{path.name}", "epoch": int(best_epoch), "sha256": sha256_file(path),
            "format": "torch state dict, weights_only"}


def run_cell(spec: CellSpec, recorder: RunRecorder) -> dict[str, Any]:
    """Train and evaluate one finetune cell; returns the metrics written to ``metrics.json``."""
    from ...runs.datasets import load_cell_dataset
    from ...data.pipeline.decode import ResizePolicy
    from ...data.pipeline.image_cache import build_image_cache
    from ...data.pipeline.loaders import eval_transform, keep_uint8, make_loader
    from ...runs.evaluate import finalize_cell
    import torch

    from ...metrics.study import argmax_predictions
    from ...models import build_classifier
    from ...utils.device import activate_device, choose_device
    from .settings import loader_workers
    from .train import CHECKPOINT, amp_dtype, curves_png, fit, log_frame, predict, seed_everything, settings_key

    settings = FinetuneSettings(**spec.settings)
    quiet = spec.quiet

    def log(msg: str) -> None:
        logger.info("[finetune %s seed %s] %s", spec.label, spec.seed, msg)

    t_start = time.perf_counter()
    device = torch.device(activate_device(choose_device(spec.device)))  # cuda:N current before any CUDA use
    # The model first: missing weights are an error within a second, before any dataset work.
    seed_everything(spec.seed)  # the head's random init depends on the seed, nothing else
    built = build_classifier(spec.model, weights=settings.weights, freeze=settings.freeze_backbone,
                             drop_rate=settings.drop_rate, image_size=settings.image_size)
    dataset = load_cell_dataset(spec, quiet=quiet)
    log(f"{built.spec.model_id} ({built.weights_identity}); {built.trainable_parameters:,} of "
        f"{built.total_parameters:,} parameters trainable; device {device}")

    policy = ResizePolicy(settings.image_size, settings.resize, interpolation=settings.interpolation)
    t_cache = time.perf_counter()
    cache = build_image_cache(dataset, policy, progress=not quiet)
    cache_s = time.perf_counter() - t_cache
    dataset, excluded = without_unreadable(dataset, cache.errors)
    if excluded:
        log(f"{len(excluded)} image(s) could not be decoded and are excluded (see exclusions.csv)")

    mean, std = tuple(built.data_config["mean"]), tuple(built.data_config["std"])
    run_key = settings_key(model=built.spec.model_id, weights=built.weights_identity,
                           freeze=built.freeze_backbone, settings=settings.model_dump(exclude={"preset"}),
                           dataset=dataset.fingerprint, seed=spec.seed, device=device.type)
    result = fit(built.model, dataset, settings, seed=spec.seed, work_dir=recorder.work, mean=mean, std=std,
                 device=device, run_key=run_key, progress=not quiet, log=log, cpu_threads=spec.threads)
    for note in result.notes:
        log(note)

    t_pred = time.perf_counter()
    eval_bs = settings.eval_batch_size or settings.batch_size
    autocast = amp_dtype(device, settings.amp)
    channels_last = settings.channels_last and device.type == "cuda"
    scores: dict[str, pd.DataFrame] = {}
    for split in ("validation", "test"):
        loader = make_loader(dataset, split, policy=policy, transform=keep_uint8, batch_size=eval_bs,
                             workers=loader_workers(settings.workers, spec.threads), seed=spec.seed, device=device,
                             progress=not quiet)
        frame, _loss = predict(built.model, loader, device, amp=autocast, channels_last=channels_last,
                               tta=settings.tta, normalize=eval_transform(mean, std))
        if settings.preset == "study":  # the study's decision: argmax of the two logits (P > 0.5)
            frame["study_pred"] = argmax_predictions(frame["p_malignant"])
        scores[split] = frame
    predict_s = time.perf_counter() - t_pred
    scores, calibration = calibrate_scores(dataset, scores, settings.calibration)

    # the same choice finalize_cell records, so the error-analysis lists match the record
    threshold = float(operating_threshold(spec.threshold_policy, scores["validation"])["value"])
    test_paths = dataset.split("test").set_index("img_id")["path"]
    errors = misclassified(scores["test"], threshold, test_paths)
    for kind, frame in errors.items():
        recorder.save_frame(ERROR_FILES[kind], frame)
    recorder.save_frame("train_log.csv", log_frame(result.history))
    try:
        recorder.save_bytes("training_curves.png",
                            curves_png(result.history, f"{spec.label} on {spec.dataset_name}, seed {spec.seed}"))
        curves = "training_curves.png"
    except Exception as exc:  # a plot must never fail a finished training run
        curves = f"not written ({type(exc).__name__}: {exc})"

    extra = {
        "model": {"name": spec.model, "timm": built.spec.model_id, "source": built.spec.source,
                  "licence": built.spec.licence, "note": built.spec.note,
                  "freeze_backbone": built.freeze_backbone,
                  "trainable_parameters": built.trainable_parameters, "total_parameters": built.total_parameters},
        "training": {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                     "epochs_run": result.epochs_run, "max_epochs": settings.epochs,
                     "stopped_early": result.stopped_early, "resumed_from_epoch": result.resumed_from_epoch,
                     "train_images_per_s": result.train_images_per_s, "balance": settings.balance,
                     "augment": settings.augment, "resize": policy.key(), "tta": settings.tta,
                     "image_cache": cache.key, "loader_workers": result.loader_workers, "notes": result.notes,
                     "log": "train_log.csv", "curves": curves},
        "checkpoint": _checkpoint_record(recorder.work, result.best_epoch),
        "error_analysis": {"split": "test", "threshold": threshold,
                           "false_benign": int(len(errors["false_benign"])),
                           "false_malignant": int(len(errors["false_malignant"])),
                           "files": dict(ERROR_FILES)},
    }
    if settings.preset == "study":
        from ...runs.study import study_metrics_record

        extra["study_metrics"] = study_metrics_record(dataset, scores, n_boot=spec.n_boot, seed=spec.seed,
                                                      rule="argmax of the two logits (P(malignant) > 0.5)")
    metrics = finalize_cell(
        recorder, dataset, {split: frame.drop(columns=["label"]) for split, frame in scores.items()},
        threshold_policy=spec.threshold_policy, n_boot=spec.n_boot, seed=spec.seed,
        provenance={"weights": built.weights_identity, "device": str(device),
                    "dtype": "float32" if autocast is None else f"autocast {str(autocast).replace('torch.', '')}",
                    "batch_size": settings.batch_size},
        timing={"image_cache_s": round(cache_s, 3), "train_s": result.train_seconds,
                "predict_s": round(predict_s, 3), "total_s": round(time.perf_counter() - t_start, 3)},
        extra=extra, cell=spec.to_dict(), excluded_images=excluded, calibration=calibration)
    if abs(float(metrics["threshold"]["value"]) - threshold) > 1e-12:
        logger.warning("[finetune %s seed %s] error analysis used threshold %s but the record chose %s; "
                       "false_benign/false_malignant.csv do not match the record",
                       spec.label, spec.seed, threshold, metrics["threshold"]["value"])
    if not settings.keep_last_checkpoint:
        # Complete now: the resume state (optimizer moments: 2x the weights) is no longer needed.
        (recorder.work / CHECKPOINT).unlink(missing_ok=True)
    return metrics
