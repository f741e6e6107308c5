"""The finetune paradigm's grid block and cell-naming rules.

::

    - paradigm: finetune
      models: [resnet18, timm:convnext_tiny.fb_in22k]   # any name `dermbench finetune --model` takes
      balance: [balanced_aug, unbalanced]               # each one is a cell variant (settings.balance)
      settings: {preset: paper}                          # validated by FinetuneSettings
      model_settings: {resnet18: {lr: 1.0e-4}}

A finetune cell's variant always starts with its balancing mode (``resnet18+balanced_aug``), so
a block without ``balance:`` and ``dermbench finetune`` without ``--balance`` name the same cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from ...runs.block import GridBlock, unique
from .settings import BALANCE_MODES, FinetuneSettings

if TYPE_CHECKING:
    from ...models import ModelSpec


class FinetuneBlock(GridBlock):
    model_kind: ClassVar[str] = "classifier"
    settings_model: ClassVar[type] = FinetuneSettings
    reuses_trained_model: ClassVar[bool] = True

    paradigm: Literal["finetune"]
    models: list[str] = Field(min_length=1, description="classifier names (`dermbench ls finetune-models`, "
                                                        "timm:<name> or a bare timm name)")
    balance: list[str] | None = Field(None, description="training-set balancing modes; each is a cell variant "
                                                        "(default: the one in settings)")

    @field_validator("models")
    @classmethod
    def _models_known(cls, v: list[str]) -> list[str]:
        return cls.canonical_names(v)

    @field_validator("balance")
    @classmethod
    def _balance_known(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        bad = [b for b in v if b not in BALANCE_MODES]
        if bad:
            raise ValueError(f"unknown balancing mode(s) {bad}; allowed: {', '.join(BALANCE_MODES)}")
        return unique(v, "balancing mode")

    def variant_axes(self) -> list[dict[str, Any]]:
        return [{"balance": mode} for mode in self.balance] if self.balance else [{}]

    @classmethod
    def variant_parts(cls, settings: dict[str, Any], model: ModelSpec) -> list[str]:
        """Balancing mode, then ``frozen``/``unfrozen`` when the backbone is trained otherwise than
        the model entry says, then ``cal-<method>`` for a calibrated cell, ``study`` for the study
        preset (its image handling differs from ``paper``'s), then the weights."""
        entry_frozen = bool(model.freeze_backbone)
        requested = settings.get("freeze_backbone")
        frozen = entry_frozen if requested is None else bool(requested)
        freeze = "" if frozen == entry_frozen else ("frozen" if frozen else "unfrozen")
        calibration = settings.get("calibration", "none")
        calibrated = "" if calibration in (None, "none") else f"cal-{calibration}"
        study = "study" if settings.get("preset") == "study" else ""
        return [str(settings.get("balance", "")), freeze, calibrated, study] + super().variant_parts(settings, model)
