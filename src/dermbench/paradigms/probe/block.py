"""The probe paradigm's grid block and cell-naming rules.

::

    - paradigm: probe
      backbones: [efficientnet_lite0_imagenet, hf:facebook/dinov2-small]   # as `dermbench probe --backbone`
      heads: [logreg, rf]                        # each head is a cell variant (settings.head)
      label_fractions: [0.1, 0.25, 1.0]          # optional: a label-fraction curve per head
      settings: {image_size: 224}                # validated by ProbeSettings

A probe cell's variant is its head plus whatever changes the training set (balancing, augmented
views, feature transform); a label fraction or k-shot value is a point on that configuration's
curve (``+frac0.1``, ``+5shot`` in the folder name, one report row per configuration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ...runs.block import GridBlock, unique
from .settings import ProbeSettings

if TYPE_CHECKING:
    from ...models import ModelSpec


class ProbeBlock(GridBlock):
    model_kind: ClassVar[str] = "backbone"
    models_field: ClassVar[str] = "backbones"
    settings_model: ClassVar[type] = ProbeSettings
    reuses_trained_model: ClassVar[bool] = True

    paradigm: Literal["probe"]
    backbones: list[str] = Field(min_length=1, description="backbone names (`dermbench ls backbones`, "
                                                           "timm:/hf:/open_clip:/hf-hub: names)")
    heads: list[str] = Field(min_length=1, description="heads (`dermbench ls heads`); each is a cell variant")
    label_fractions: list[float] | None = Field(
        None, description="train-label fractions of a probe curve (e.g. [0.01, 0.05, 0.1, 0.25, 1.0])")
    k_shots: list[int] | None = Field(None, description="train images per class of a k-shot curve (e.g. [5, 10, 20])")

    @field_validator("backbones")
    @classmethod
    def _backbones_known(cls, v: list[str]) -> list[str]:
        return cls.canonical_names(v)

    @field_validator("heads")
    @classmethod
    def _heads_registered(cls, v: list[str]) -> list[str]:
        from .heads import HEADS

        problems = [HEADS.unknown_message(h) for h in v if h not in HEADS]
        if problems:
            raise ValueError("; ".join(problems))
        return unique([HEADS.entry(h).name for h in v], "head")

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            bad = [f for f in v if not 0 < f <= 1]
            if bad:
                raise ValueError(f"label fractions must lie in (0, 1]; got {bad}")
            unique(v, "label fraction")
        return v

    @field_validator("k_shots")
    @classmethod
    def _k_shots(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            bad = [k for k in v if k < 1]
            if bad:
                raise ValueError(f"k_shots must be >= 1; got {bad}")
            unique(v, "k_shot")
        return v

    @model_validator(mode="after")
    def _one_curve(self) -> "ProbeBlock":
        if self.label_fractions and self.k_shots:
            raise ValueError("give either label_fractions or k_shots, not both (one curve axis per block)")
        return self

    def variant_axes(self) -> list[dict[str, Any]]:
        if self.k_shots:
            points: list[dict[str, Any]] = [{"k_shot": k} for k in self.k_shots]
        elif self.label_fractions:
            points = [{"label_fraction": f} for f in self.label_fractions]
        else:
            points = [{}]
        return [{"head": head, **point} for head in self.heads for point in points]

    @classmethod
    def variant_parts(cls, settings: dict[str, Any], model: ModelSpec) -> list[str]:
        """Head, balancing, augmented views, feature transform, calibration, the study's head preset
        (``study``/``study_hpo``) and input (``study_input``), then the weights."""
        parts = [str(settings.get("head", ""))]
        balance = settings.get("balance", "none")
        if balance == "smote":
            parts.append("smote")
        elif balance == "undersample":
            mode = settings.get("undersample", "min_class")
            parts.append({"min_class": "under", "max_per_class": f"under{settings.get('max_per_class')}",
                          "ratio": f"under{float(settings.get('ratio', 1.0)):g}"}[mode])
        if settings.get("train_views"):
            parts.append(f"aug{settings['train_views']}")
        if settings.get("feature_transform", "none") != "none":
            parts.append(str(settings["feature_transform"]))
        if settings.get("calibration", "none") != "none":
            parts.append(f"cal-{settings['calibration']}")
        if settings.get("head_preset", "dermbench") != "dermbench":
            parts.append(str(settings["head_preset"]))  # study / study_hpo
        if settings.get("preprocessing", "default") != "default":
            parts.append(f"{settings['preprocessing']}_input")  # study_input
        return parts + super().variant_parts(settings, model)
