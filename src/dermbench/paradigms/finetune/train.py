"""The one training loop of the finetune paradigm, shared by every model (CNN, ViT, DINOv3).

Protocol (the ``paper`` preset, PRODUCT §5): AdamW, cosine schedule stepped once per epoch,
cross-entropy on two logits (p_malignant = softmax[:, 1]), early stopping on the validation loss
with patience, and the weights of the best epoch restored at the end.

Reproducibility and resume
--------------------------
Every epoch starts by seeding torch, numpy and ``random`` from ``(seed, epoch)``, and reseeding the
training loader (shuffle order, oversampling draws, worker seeds) from the same derived seed. The
loader itself is built once per run, so its worker processes persist across epochs; each worker
reseeds itself at the start of an epoch exactly as a freshly started one would
(:class:`~dermbench.data.pipeline.loaders.EpochSeededImages`). The randomness of epoch *k* therefore
depends only on the seed and *k*, never on how many epochs ran in this process. After every epoch the full state (model, optimizer, scheduler, grad scaler,
early-stopping state, history, RNG states) is written atomically to ``work/last.pt`` as plain
tensors and containers, loadable with ``torch.load(weights_only=True)``. A killed run restarted
with the same settings continues after the last saved epoch and, on a CPU, ends with
bit-identical weights and metrics to an uninterrupted run (``tests/test_finetune_resume.py``).
The checkpoint records a key of everything that shapes training (model, weights, settings,
dataset fingerprint, seed); a checkpoint with another key is ignored and training starts over.

Balancing
---------
``balanced_aug``: a ``WeightedRandomSampler`` draws ``len(train)`` images per epoch (the
``study`` preset: ``balanced_epoch="max_class"``, the largest class count × 2, as the study) with
replacement, each with probability proportional to 1 / (its class count) — both classes are seen
equally often, and the minority class is seen through fresh augmentations (the study's mode).
``class_weighted``: the training loss weights class c by ``n / (2 · n_c)``.
``unbalanced``: plain shuffling and an unweighted loss. The validation loss used for early
stopping is always the *unweighted* mean cross-entropy, so the three modes stop on the same
criterion.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .settings import FinetuneSettings

if TYPE_CHECKING:
    from ...data.dataset import LesionDataset

CHECKPOINT = "last.pt"
BEST_WEIGHTS = "best_epoch{epoch:04d}.pt"  # one file per best epoch: last.pt names the one that counts
LOG_CSV = "train_log.csv"
LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_auroc", "lr", "seconds", "train_images_per_s", "best")


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    resumed_from_epoch: int | None
    train_seconds: float
    train_images_per_s: float
    checkpoint: str
    notes: list[str] = field(default_factory=list)
    loader_workers: int = 0      # the training loader's worker processes (their count shapes the augmentation draws)


# --------------------------------------------------------------------------------------------
# Small pieces
# --------------------------------------------------------------------------------------------

def derive_seed(seed: int, *parts: int) -> int:
    """A 31-bit seed from ``seed`` and integers (epoch, purpose), stable across processes."""
    text = ":".join(str(int(x)) for x in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype(device: Any, enabled: bool) -> Any:
    """Autocast dtype on CUDA: bf16 where the GPU computes it natively (compute capability 8.0 and
    later), else fp16, which training pairs with a grad scaler (:func:`grad_scaler`); None on CPU or
    when disabled."""
    if not enabled or device.type != "cuda":
        return None
    from ...utils.device import autocast_dtype

    return autocast_dtype(device)


def grad_scaler(device: Any, autocast: Any) -> Any:
    """``torch.amp.GradScaler`` for ``device``, enabled exactly when training runs in fp16 (whose
    small gradients underflow without loss scaling); a disabled scaler passes everything through."""
    import torch

    return torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)


def class_counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=2)


def oversampling_weights(labels: np.ndarray) -> np.ndarray:
    """Per-image sampling weight 1 / count(class): each class has the same total weight."""
    counts = class_counts(labels)
    if (counts == 0).any():
        raise ValueError(f"the training split needs both classes to balance them; counts benign={counts[0]}, "
                         f"malignant={counts[1]}")
    return (1.0 / counts[np.asarray(labels, dtype=np.int64)]).astype(np.float64)


def loss_class_weights(labels: np.ndarray) -> np.ndarray:
    """Class weights ``n / (2 · n_c)`` (sklearn's 'balanced'): a balanced set gets weights 1, 1."""
    counts = class_counts(labels)
    if (counts == 0).any():
        raise ValueError(f"the training split needs both classes for a class-weighted loss; counts "
                         f"benign={counts[0]}, malignant={counts[1]}")
    return counts.sum() / (2.0 * counts)


def oversampled_epoch(labels: np.ndarray, mode: str = "train_size") -> int:
    """Draws per oversampled epoch: ``train_size`` = ``len(labels)``; ``max_class`` = the largest
    class count × the number of classes present (the study's ``num_samples``)."""
    if mode == "train_size":
        return int(len(labels))
    if mode == "max_class":
        counts = class_counts(labels)
        return int(counts.max() * int((counts > 0).sum()))
    raise ValueError(f"unknown balanced_epoch {mode!r}; use train_size or max_class")


def make_oversampler(labels: np.ndarray, seed: int, num_samples: int | None = None) -> Any:
    import torch
    from torch.utils.data import WeightedRandomSampler

    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return WeightedRandomSampler(torch.as_tensor(oversampling_weights(labels), dtype=torch.double),
                                 num_samples=int(num_samples or len(labels)), replacement=True, generator=generator)


def make_sampler(settings: FinetuneSettings, train_labels: np.ndarray, seed: int) -> Any:
    """The epoch's sampler: weighted oversampling for ``balanced_aug`` (``balanced_epoch`` draws),
    else None (plain shuffling)."""
    if settings.balance != "balanced_aug":
        return None
    return make_oversampler(train_labels, seed, oversampled_epoch(train_labels, settings.balanced_epoch))


def make_criterion(settings: FinetuneSettings, train_labels: np.ndarray, device: Any = "cpu") -> Any:
    """Training loss: cross-entropy, class-weighted ``n / (2 · n_c)`` for ``class_weighted``."""
    import torch

    weight = None
    if settings.balance == "class_weighted":
        weight = torch.as_tensor(loss_class_weights(train_labels), dtype=torch.float32, device=device)
    return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=settings.label_smoothing)


def auroc(labels: np.ndarray, p: np.ndarray) -> float:
    """Validation AUROC (NaN when the split has one class)."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return float("nan")
    from ...metrics import threshold_free

    value = threshold_free(labels, p)["auroc"]
    return float("nan") if value is None else float(value)


def settings_key(**material: Any) -> str:
    """Identity of a training run; a checkpoint is resumed only under the same key."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Checkpoints (weights_only-compatible)
# --------------------------------------------------------------------------------------------

def _cuda_devices() -> int:
    """CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _rng_state() -> dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": np_state[0], "state": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if _cuda_devices():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> list[str]:
    """Restore the saved RNG states that apply here; returns notes on what was not restored.

    Every epoch reseeds torch (CPU and every CUDA device), numpy and ``random`` from ``(seed,
    epoch)``, so these states only matter between the checkpoint and that reseed; a CUDA state is
    restored for each device that exists here and skipped otherwise (a run resumed on a machine or
    worker that sees fewer GPUs, or none)."""
    import torch

    notes = []
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved_cuda = list(state.get("cuda") or [])
    if saved_cuda:
        here = _cuda_devices()
        for index, cuda_state in enumerate(saved_cuda[:here]):
            try:
                torch.cuda.set_rng_state(cuda_state, device=index)
            except (RuntimeError, ValueError) as exc:  # e.g. a state of another CUDA generator layout
                notes.append(f"CUDA RNG state of device {index} not restored ({type(exc).__name__}: {exc})")
        if len(saved_cuda) > here:
            notes.append(f"checkpoint holds CUDA RNG states of {len(saved_cuda)} device(s), this process sees "
                         f"{here}; restored {min(here, len(saved_cuda))} (each epoch reseeds every device)")
    return notes


def _cpu_state_dict(module: Any) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` into a temporary file and rename: a kill never leaves half a checkpoint."""
    import torch

    from ...utils.atomic import atomic_write_with

    atomic_write_with(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------

def predict(model: Any, loader: Any, device: Any, *, amp: Any = None, channels_last: bool = False,
            tta: bool = False, normalize: Callable[[Any], Any] | None = None) -> tuple[Any, float]:
    """Score every image of ``loader``: a frame ``img_id, label, p_malignant`` and the mean loss.

    With ``tta`` the softmax probabilities of the image and its horizontal and vertical flips
    are averaged (the loss is that of the averaged probabilities). ``normalize`` turns a uint8
    batch into the model's input on ``device`` (:func:`~dermbench.data.pipeline.loaders.eval_transform`
    takes batches); loaders that already yield float images need none. Scores and losses stay on
    the device until the last batch (one host transfer, no synchronisation per batch).
    """
    import pandas as pd
    import torch

    model.eval()
    ids: list[str] = []
    labels: list[np.ndarray] = []
    probs: list[Any] = []
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_n = 0
    with torch.inference_mode():
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            if normalize is not None:
                x = normalize(x)
            if channels_last and device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["label"].to(device)
            views = [x, torch.flip(x, dims=[3]), torch.flip(x, dims=[2])] if tta else [x]
            p = None
            for view in views:
                with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
                    logits = model(view)
                soft = torch.softmax(logits.float(), dim=1)
                p = soft if p is None else p + soft
            p = p / len(views)
            total_loss += torch.nn.functional.nll_loss(torch.log(p.clamp_min(1e-12)), y, reduction="sum").double()
            total_n += int(y.numel())
            ids.extend(batch["img_id"])
            labels.append(batch["label"].numpy())
            probs.append(p[:, 1])
    p_malignant = torch.cat(probs).cpu().numpy().astype(np.float64) if probs else np.zeros(0)
    frame = pd.DataFrame({"img_id": ids,
                          "label": np.concatenate(labels) if labels else np.zeros(0, np.int64),
                          "p_malignant": np.clip(p_malignant, 0.0, 1.0)})
    return frame, (float(total_loss) / total_n if total_n else float("nan"))


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def fit(
    model: Any,
    dataset: LesionDataset,
    settings: FinetuneSettings,
    *,
    seed: int,
    work_dir: str | Path,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    device: Any = None,
    run_key: str = "",
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    cpu_threads: int = 0,
) -> TrainResult:
    """Train ``model`` (2 logits) on ``dataset``'s train split, early-stopping on validation.

    ``work_dir`` holds ``last.pt`` (resume state), the best epoch's weights and the per-epoch
    ``train_log.csv``; an existing ``last.pt`` with the same ``run_key`` is resumed. On return
    the model holds the weights of the best epoch. ``on_epoch_end(epoch, row)`` is called after
    each epoch's checkpoint is written (epochs count from 1). ``cpu_threads``: the CPUs the cell
    has (its ``resources.num_cpus``), which size the loader workers when ``settings.workers`` is
    not set (:func:`~dermbench.paradigms.finetune.settings.loader_workers`). ``log`` takes the
    per-epoch and resume lines (default: the ``finetune`` console logger).
    """
    if log is None:
        from ...utils.console import get_logger

        log = get_logger("finetune").info
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    run = _setup(model, dataset, settings, seed=seed, mean=mean, std=std, device=device, progress=progress,
                 cpu_threads=cpu_threads)
    state = _resume(work / CHECKPOINT, run, run_key, settings, log)
    stopped_early = bool(state.history and state.history[-1].get("stopped_early"))
    train_seconds = sum(float(r["seconds"]) for r in state.history)
    images_seen = sum(int(r.get("train_images", 0)) for r in state.history)
    for epoch in range(state.start_epoch, settings.epochs + 1):
        if stopped_early:
            break
        t0 = time.perf_counter()
        loss_sum, seen, train_time = _train_epoch(run, settings, seed=seed, epoch=epoch)
        row = _finish_epoch(run, state, settings, epoch=epoch, t0=t0, train_time=train_time, loss_sum=loss_sum,
                            seen=seen, work=work, run_key=run_key)
        train_seconds += train_time
        images_seen += seen
        if progress:
            log(f"epoch {epoch:>3}/{settings.epochs}  train_loss {row['train_loss']:.4f}  "
                f"val_loss {row['val_loss']:.4f}  val_auroc {row['val_auroc']:.4f}  lr {row['lr']:.2e}  "
                f"{row['seconds']:.1f}s" + ("  *" if row["best"] else ""))
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if row["stopped_early"]:
            stopped_early = True
            break
    _restore_best(run, state, work)
    return TrainResult(history=state.history, best_epoch=int(state.best["epoch"]),
                       best_val_loss=float(state.best["val_loss"]), epochs_run=len(state.history),
                       stopped_early=stopped_early, resumed_from_epoch=state.resumed_from,
                       train_seconds=round(train_seconds, 3),
                       train_images_per_s=round(images_seen / train_seconds, 2) if train_seconds > 0 else 0.0,
                       checkpoint=str(work / CHECKPOINT), notes=state.notes, loader_workers=run.workers)


@dataclass
class _Run:
    """What every epoch of one training run uses, built once by :func:`_setup`."""

    model: Any                   # the module whose weights are trained and checkpointed
    net: Any                     # what batches go through: the module, or its torch.compile wrapper
    optimizer: Any
    scheduler: Any
    scaler: Any
    criterion: Any
    device: Any
    autocast: Any                # autocast dtype, None for float32
    channels_last: bool
    policy: Any                  # ResizePolicy of the image cache
    train_loader: Any            # built once; reseeded per epoch (_start_epoch)
    train_sampler: Any           # the oversampler (balanced_aug) or the shuffling RandomSampler
    epoch_generator: Any         # shuffle order and worker seeds of the current epoch
    train_normalize: Any         # uint8 train batch -> augmented images' normalised float, on device
    eval_normalize: Any          # uint8 eval batch -> normalised float, on device
    val_loader: Any
    train_labels: np.ndarray
    workers: int


@dataclass
class _Progress:
    """Where training stands: what a checkpoint saves and a resumed run continues from."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"val_loss": math.inf, "epoch": 0, "bad_epochs": 0})
    start_epoch: int = 1
    resumed_from: int | None = None
    notes: list[str] = field(default_factory=list)


def _setup(model: Any, dataset: LesionDataset, settings: FinetuneSettings, *, seed: int,
           mean: tuple[float, float, float], std: tuple[float, float, float], device: Any, progress: bool,
           cpu_threads: int = 0) -> _Run:
    """Model on its device, AdamW + cosine schedule + grad scaler, loss, the training loader (once),
    the validation loader. Loaders yield uint8 batches; normalisation happens on the device."""
    import torch

    from ...data.pipeline.decode import ResizePolicy
    from ...data.pipeline.loaders import eval_transform, keep_uint8, make_loader
    from ...utils.device import choose_device
    from .augment import train_normalizer, train_pixels
    from .settings import loader_workers

    device = device or torch.device(choose_device("auto"))
    policy = ResizePolicy(settings.image_size, settings.resize, interpolation=settings.interpolation)
    autocast_dtype = amp_dtype(device, settings.amp)
    channels_last = settings.channels_last and device.type == "cuda"
    if device.type == "cuda":
        # every batch has the working size: let cuDNN pick its fastest kernels once per shape
        torch.backends.cudnn.benchmark = True
    raw_model = model.to(device)
    if channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    net = torch.compile(raw_model) if settings.compile and device.type == "cuda" else raw_model

    params = [p for p in raw_model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.t_max, eta_min=settings.eta_min)
    scaler = grad_scaler(device, autocast_dtype)

    train_labels = dataset.split("train")["label"].to_numpy(dtype=np.int64)
    criterion = make_criterion(settings, train_labels, device)
    workers = loader_workers(settings.workers, cpu_threads)
    # The epoch's draws come from these generators, reseeded per epoch (_start_epoch): the
    # oversampler's own, or the shuffle order's (which also gives the workers' seeds).
    epoch_generator = torch.Generator()
    sampler = make_sampler(settings, train_labels, seed)
    if sampler is None:
        sampler = torch.utils.data.RandomSampler(range(len(train_labels)), generator=epoch_generator)
    micro = settings.micro_batch_size
    # A last batch of one image breaks BatchNorm in train mode; drop only that case.
    train_loader = make_loader(dataset, "train", policy=policy, transform=train_pixels(settings.augment,
                                                                                       settings.image_size),
                               batch_size=micro, sampler=sampler, workers=workers, seed=seed,
                               drop_last=(len(sampler) % micro == 1), device=device, progress=progress,
                               epoch_seeded=True)
    eval_bs = settings.eval_batch_size or settings.batch_size
    val_loader = make_loader(dataset, "validation", policy=policy, transform=keep_uint8, batch_size=eval_bs,
                             workers=workers, seed=seed, device=device, progress=progress)
    return _Run(model=raw_model, net=net, optimizer=optimizer, scheduler=scheduler, scaler=scaler, criterion=criterion,
                device=device, autocast=autocast_dtype, channels_last=channels_last, policy=policy,
                train_loader=train_loader, train_sampler=sampler, epoch_generator=epoch_generator,
                train_normalize=train_normalizer(mean, std), eval_normalize=eval_transform(mean, std),
                val_loader=val_loader, train_labels=train_labels, workers=workers)


def _resume(ckpt_path: Path, run: _Run, run_key: str, settings: FinetuneSettings,
            log: Callable[[str], None]) -> _Progress:
    """The state of ``ckpt_path`` loaded into ``run`` when it belongs to ``run_key``, else a fresh start.
    An unreadable checkpoint or one of another configuration is noted and ignored, never fatal."""
    state = _Progress()
    if not ckpt_path.is_file():
        return state
    try:
        saved = load_checkpoint(ckpt_path)
    except Exception as exc:  # unreadable checkpoint: start over rather than fail the cell
        state.notes.append(f"ignored unreadable checkpoint {ckpt_path.name} ({type(exc).__name__}: {exc})")
        return state
    if saved.get("run_key") != run_key:
        state.notes.append(f"ignored checkpoint {ckpt_path.name} of another configuration "
                           f"(key {saved.get('run_key')} != {run_key})")
        return state
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.scaler.load_state_dict(saved["scaler"])
    state.notes.extend(_set_rng_state(saved["rng"]))
    state.history = list(saved["history"])
    state.best = dict(saved["best"])
    state.start_epoch = int(saved["epoch"]) + 1
    state.resumed_from = int(saved["epoch"])
    log(f"resuming from epoch {state.resumed_from} ({ckpt_path})")
    if saved.get("finished"):
        state.start_epoch = settings.epochs + 1  # nothing left to train
    return state


def _start_epoch(run: _Run, settings: FinetuneSettings, *, seed: int, epoch: int) -> None:
    """Seed everything epoch ``epoch`` draws from ``(seed, epoch)``: the global RNGs (augmentation
    in the main process), the oversampler or shuffle order, and the workers' seeds (drawn first
    from the shuffle generator, as a DataLoader draws its base seed when an epoch's iterator starts)."""
    import torch

    seed_everything(derive_seed(seed, epoch))
    if settings.balance == "balanced_aug":
        run.train_sampler.generator.manual_seed(derive_seed(seed, epoch, 1))
    run.epoch_generator.manual_seed(derive_seed(seed, epoch, 2))
    base_seed = int(torch.empty((), dtype=torch.int64).random_(generator=run.epoch_generator).item())
    run.train_loader.dataset.set_epoch_seed(base_seed)


def _train_epoch(run: _Run, settings: FinetuneSettings, *, seed: int, epoch: int) -> tuple[float, int, float]:
    """One pass over the train split; returns (sum of per-image losses, images seen, seconds).

    The epoch's randomness (global RNGs, sampler draws, loader order and worker seeds) derives from
    ``(seed, epoch)`` alone, so a resumed run repeats it exactly. Gradients are accumulated over
    ``settings.accumulate`` micro-batches (a shorter last group is scaled by its own length). The
    loss sum stays on the device (one host transfer per epoch)."""
    import torch

    from ...models.classifier import set_train_mode

    t0 = time.perf_counter()
    _start_epoch(run, settings, seed=seed, epoch=epoch)
    train_loader = run.train_loader
    set_train_mode(run.model)
    n_batches = len(train_loader)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    seen = 0
    run.optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(train_loader):
        x = run.train_normalize(batch["image"].to(run.device, non_blocking=True))
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch["label"].to(run.device, non_blocking=True)
        group_start = (i // settings.accumulate) * settings.accumulate
        group_len = min(settings.accumulate, n_batches - group_start)
        with torch.autocast(device_type=run.device.type, dtype=run.autocast, enabled=run.autocast is not None):
            logits = run.net(x)
            loss = run.criterion(logits.float(), y)
        run.scaler.scale(loss / group_len).backward()
        if i - group_start + 1 == group_len:
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach().double() * int(y.numel())
        seen += int(y.numel())
    return float(loss_sum), seen, time.perf_counter() - t0


def _finish_epoch(run: _Run, state: _Progress, settings: FinetuneSettings, *, epoch: int, t0: float,
                  train_time: float, loss_sum: float, seen: int, work: Path, run_key: str) -> dict[str, Any]:
    """Step the schedule, validate, track the best epoch (early stopping), write the checkpoint and
    the log; returns the epoch's log row (appended to ``state.history``)."""
    lr_used = float(run.optimizer.param_groups[0]["lr"])
    run.scheduler.step()
    val_frame, val_loss = predict(run.net, run.val_loader, run.device, amp=run.autocast,
                                  channels_last=run.channels_last, normalize=run.eval_normalize)
    val_auc = auroc(val_frame["label"].to_numpy(), val_frame["p_malignant"].to_numpy())
    if not math.isfinite(val_loss):
        raise FloatingPointError(f"validation loss is {val_loss} at epoch {epoch}; lower the learning rate")
    improved = val_loss < state.best["val_loss"] - settings.min_delta
    if improved:
        state.best = {"val_loss": float(val_loss), "epoch": epoch, "bad_epochs": 0}
        save_checkpoint(work / BEST_WEIGHTS.format(epoch=epoch),
                        {"model": _cpu_state_dict(run.model), "epoch": epoch, "run_key": run_key})
    else:
        state.best["bad_epochs"] = int(state.best["bad_epochs"]) + 1
    stop = state.best["bad_epochs"] >= settings.patience
    row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "val_loss": float(val_loss),
           "val_auroc": val_auc, "lr": lr_used, "seconds": round(time.perf_counter() - t0, 3),
           "train_images_per_s": round(seen / train_time, 2) if train_time > 0 else float("nan"),
           "best": bool(improved), "train_images": seen, "stopped_early": bool(stop)}
    state.history.append(row)
    save_checkpoint(work / CHECKPOINT, {
        "model": _cpu_state_dict(run.model), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "rng": _rng_state(),
        "epoch": epoch, "best": state.best, "history": state.history, "run_key": run_key,
        "finished": bool(stop or epoch == settings.epochs),
    })
    _remove_stale_best(work, keep=int(state.best["epoch"]))
    write_log(work / LOG_CSV, state.history)
    return row


def _restore_best(run: _Run, state: _Progress, work: Path) -> None:
    """Load the best epoch's weights into the model (and write the final log)."""
    if not state.history:
        raise RuntimeError("no epoch was trained (settings.epochs < 1?)")
    best_path = work / BEST_WEIGHTS.format(epoch=int(state.best["epoch"]))
    if not best_path.is_file():
        raise RuntimeError(f"the best weights {best_path} are missing; delete {work} to train this cell again")
    run.model.load_state_dict(load_checkpoint(best_path)["model"])
    write_log(work / LOG_CSV, state.history)


def _remove_stale_best(work: Path, keep: int) -> None:
    """Delete best-weights files of earlier best epochs (after last.pt names the current one)."""
    for path in work.glob("best_epoch*.pt"):
        if path.name != BEST_WEIGHTS.format(epoch=keep):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Log and curves
# --------------------------------------------------------------------------------------------

def log_frame(history: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame([{k: r.get(k) for k in LOG_COLUMNS} for r in history], columns=list(LOG_COLUMNS))


def write_log(path: Path, history: list[dict[str, Any]]) -> None:
    from ...utils.atomic import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(LOG_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def curves_png(history: list[dict[str, Any]], title: str = "") -> bytes:
    """Loss (train/validation) and validation AUROC per epoch, as PNG bytes (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(9, 3.6), dpi=110)
    ax_loss, ax_auc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o", ms=3, label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], marker="o", ms=3, label="validation")
    best = [r["epoch"] for r in history if r.get("best")]
    if best:
        ax_loss.axvline(best[-1], color="grey", ls="--", lw=1, label=f"best epoch {best[-1]}")
        ax_auc.axvline(best[-1], color="grey", ls="--", lw=1)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend(fontsize=8)
    ax_auc.plot(epochs, [r["val_auroc"] for r in history], marker="o", ms=3, color="tab:green")
    ax_auc.set_xlabel("epoch")
    ax_auc.set_ylabel("validation AUROC")
    ax_auc.set_ylim(0.0, 1.0)
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
