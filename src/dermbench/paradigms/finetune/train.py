"""The one training loop of the finetune paradigm, shared by every model (CNN, ViT, DINOv3).

Protocol (the ``paper`` preset, PRODUCT §5): AdamW, cosine schedule stepped once per epoch,
cross-entropy on two logits (p_malignant = softmax[:, 1]), early stopping on the validation loss
with patience, and the weights of the best epoch restored at the end.

Reproducibility and resume
--------------------------
Every epoch starts by seeding torch, numpy and ``random`` from ``(seed, epoch)``, and the loaders
(shuffle order, oversampling draws, worker seeds) are built per epoch from the same derived seed.
The randomness of epoch *k* therefore depends only on the seed and *k*, never on how many epochs
ran in this process. After every epoch the full state (model, optimizer, scheduler, grad scaler,
early-stopping state, history, RNG states) is written atomically to ``work/last.pt`` as plain
tensors and containers, loadable with ``torch.load(weights_only=True)``. A killed run restarted
with the same settings continues after the last saved epoch and, on a CPU, ends with
bit-identical weights and metrics to an uninterrupted run (``tests/test_finetune_resume.py``).
The checkpoint records a key of everything that shapes training (model, weights, settings,
dataset fingerprint, seed); a checkpoint with another key is ignored and training starts over.

Balancing
---------
``balanced_aug``: a ``WeightedRandomSampler`` draws ``len(train)`` images per epoch with
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
from typing import Any, Callable

import numpy as np

from .settings import FinetuneSettings

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
    """Autocast dtype on CUDA (bf16 where supported, else fp16), None on CPU or when disabled."""
    import torch

    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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


def make_oversampler(labels: np.ndarray, seed: int) -> Any:
    import torch
    from torch.utils.data import WeightedRandomSampler

    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return WeightedRandomSampler(torch.as_tensor(oversampling_weights(labels), dtype=torch.double),
                                 num_samples=len(labels), replacement=True, generator=generator)


def make_sampler(settings: FinetuneSettings, train_labels: np.ndarray, seed: int) -> Any:
    """The epoch's sampler: weighted oversampling for ``balanced_aug``, else None (plain shuffling)."""
    return make_oversampler(train_labels, seed) if settings.balance == "balanced_aug" else None


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

def _rng_state() -> dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": np_state[0], "state": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
            tta: bool = False) -> tuple[Any, float]:
    """Score every image of ``loader``: a frame ``img_id, label, p_malignant`` and the mean loss.

    With ``tta`` the softmax probabilities of the image and its horizontal and vertical flips
    are averaged (the loss is that of the averaged probabilities).
    """
    import pandas as pd
    import torch

    model.eval()
    ids: list[str] = []
    labels: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    total_loss, total_n = 0.0, 0
    with torch.inference_mode():
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
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
            total_loss += float(torch.nn.functional.nll_loss(torch.log(p.clamp_min(1e-12)), y, reduction="sum"))
            total_n += int(y.numel())
            ids.extend(batch["img_id"])
            labels.append(batch["label"].numpy())
            probs.append(p[:, 1].cpu().numpy().astype(np.float64))
    frame = pd.DataFrame({"img_id": ids,
                          "label": np.concatenate(labels) if labels else np.zeros(0, np.int64),
                          "p_malignant": np.clip(np.concatenate(probs), 0.0, 1.0) if probs else np.zeros(0)})
    return frame, (total_loss / total_n if total_n else float("nan"))


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def fit(
    model: Any,
    dataset: Any,
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
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train ``model`` (2 logits) on ``dataset``'s train split, early-stopping on validation.

    ``work_dir`` holds ``last.pt`` (resume state), ``best.pt`` (best weights) and the per-epoch
    ``train_log.csv``; an existing ``last.pt`` with the same ``run_key`` is resumed. On return
    the model holds the weights of the best epoch. ``on_epoch_end(epoch, row)`` is called after
    each epoch's checkpoint is written (epochs count from 1).
    """
    import torch

    from ...data.pipeline.decode import ResizePolicy
    from ...data.pipeline.loaders import eval_transform, make_loader
    from .augment import train_transform
    from ...models.classifier import set_train_mode
    from ...utils.device import choose_device

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    device = device or torch.device(choose_device("auto"))
    policy = ResizePolicy(settings.image_size, settings.resize)
    autocast_dtype = amp_dtype(device, settings.amp)
    channels_last = settings.channels_last and device.type == "cuda"
    raw_model = model.to(device)
    if channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    net = torch.compile(raw_model) if settings.compile and device.type == "cuda" else raw_model

    params = [p for p in raw_model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.t_max, eta_min=settings.eta_min)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)

    train_labels = dataset.split("train")["label"].to_numpy(dtype=np.int64)
    criterion = make_criterion(settings, train_labels, device)
    train_tf = train_transform(settings.augment, settings.image_size, mean, std)
    eval_tf = eval_transform(mean, std)
    eval_bs = settings.eval_batch_size or settings.batch_size
    val_loader = make_loader(dataset, "validation", policy=policy, transform=eval_tf, batch_size=eval_bs,
                             workers=settings.workers, seed=seed, device=device, progress=progress)

    history: list[dict[str, Any]] = []
    best = {"val_loss": math.inf, "epoch": 0, "bad_epochs": 0}
    start_epoch = 1
    resumed_from = None
    notes: list[str] = []
    ckpt_path = work / CHECKPOINT
    if ckpt_path.is_file():
        try:
            state = load_checkpoint(ckpt_path)
        except Exception as exc:  # unreadable checkpoint: start over rather than fail the cell
            state = None
            notes.append(f"ignored unreadable checkpoint {ckpt_path.name} ({type(exc).__name__}: {exc})")
        if state is not None and state.get("run_key") != run_key:
            notes.append(f"ignored checkpoint {ckpt_path.name} of another configuration "
                         f"(key {state.get('run_key')} != {run_key})")
            state = None
        if state is not None:
            raw_model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"])
            history = list(state["history"])
            best = dict(state["best"])
            start_epoch = int(state["epoch"]) + 1
            resumed_from = int(state["epoch"])
            log(f"resuming from epoch {resumed_from} ({ckpt_path})")
            if state.get("finished"):
                start_epoch = settings.epochs + 1  # nothing left to train

    stopped_early = bool(history and history[-1].get("stopped_early"))
    n_train = len(train_labels)
    micro = settings.micro_batch_size
    train_seconds = sum(float(r["seconds"]) for r in history)
    images_seen = sum(int(r.get("train_images", 0)) for r in history)
    for epoch in range(start_epoch, settings.epochs + 1):
        if stopped_early:
            break
        t0 = time.perf_counter()
        epoch_seed = derive_seed(seed, epoch)
        seed_everything(epoch_seed)
        sampler = make_sampler(settings, train_labels, derive_seed(seed, epoch, 1))
        # A last batch of one image breaks BatchNorm in train mode; drop only that case.
        train_loader = make_loader(dataset, "train", policy=policy, transform=train_tf, batch_size=micro,
                                   shuffle=sampler is None, sampler=sampler, workers=settings.workers,
                                   seed=derive_seed(seed, epoch, 2), drop_last=(n_train % micro == 1),
                                   device=device, progress=progress)
        set_train_mode(raw_model)
        n_batches = len(train_loader)
        loss_sum, seen = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(train_loader):
            x = batch["image"].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["label"].to(device, non_blocking=True)
            group_start = (i // settings.accumulate) * settings.accumulate
            group_len = min(settings.accumulate, n_batches - group_start)
            with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = net(x)
                loss = criterion(logits.float(), y)
            scaler.scale(loss / group_len).backward()
            if i - group_start + 1 == group_len:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach()) * int(y.numel())
            seen += int(y.numel())
        train_time = time.perf_counter() - t0
        lr_used = float(optimizer.param_groups[0]["lr"])
        scheduler.step()
        val_frame, val_loss = predict(net, val_loader, device, amp=autocast_dtype, channels_last=channels_last)
        val_auc = auroc(val_frame["label"].to_numpy(), val_frame["p_malignant"].to_numpy())
        if not math.isfinite(val_loss):
            raise FloatingPointError(f"validation loss is {val_loss} at epoch {epoch}; lower the learning rate")
        improved = val_loss < best["val_loss"] - settings.min_delta
        if improved:
            best = {"val_loss": float(val_loss), "epoch": epoch, "bad_epochs": 0}
            save_checkpoint(work / BEST_WEIGHTS.format(epoch=epoch),
                            {"model": _cpu_state_dict(raw_model), "epoch": epoch, "run_key": run_key})
        else:
            best["bad_epochs"] = int(best["bad_epochs"]) + 1
        stop = best["bad_epochs"] >= settings.patience
        seconds = time.perf_counter() - t0
        train_seconds += train_time
        images_seen += seen
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "val_loss": float(val_loss),
               "val_auroc": val_auc, "lr": lr_used, "seconds": round(seconds, 3),
               "train_images_per_s": round(seen / train_time, 2) if train_time > 0 else float("nan"),
               "best": bool(improved), "train_images": seen, "stopped_early": bool(stop)}
        history.append(row)
        finished = stop or epoch == settings.epochs
        save_checkpoint(ckpt_path, {
            "model": _cpu_state_dict(raw_model), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
            "epoch": epoch, "best": best, "history": history, "run_key": run_key, "finished": bool(finished),
        })
        _remove_stale_best(work, keep=int(best["epoch"]))
        write_log(work / LOG_CSV, history)
        if progress:
            log(f"epoch {epoch:>3}/{settings.epochs}  train_loss {row['train_loss']:.4f}  val_loss {val_loss:.4f}  "
                f"val_auroc {val_auc:.4f}  lr {lr_used:.2e}  {seconds:.1f}s" + ("  *" if improved else ""))
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if stop:
            stopped_early = True
            break

    if not history:
        raise RuntimeError("no epoch was trained (settings.epochs < 1?)")
    best_path = work / BEST_WEIGHTS.format(epoch=int(best["epoch"]))
    if not best_path.is_file():
        raise RuntimeError(f"the best weights {best_path} are missing; delete {work} to train this cell again")
    raw_model.load_state_dict(load_checkpoint(best_path)["model"])
    write_log(work / LOG_CSV, history)
    return TrainResult(history=history, best_epoch=int(best["epoch"]), best_val_loss=float(best["val_loss"]),
                       epochs_run=len(history), stopped_early=stopped_early, resumed_from_epoch=resumed_from,
                       train_seconds=round(train_seconds, 3),
                       train_images_per_s=round(images_seen / train_seconds, 2) if train_seconds > 0 else 0.0,
                       checkpoint=str(ckpt_path), notes=notes)


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
