"""The zeroshot paradigm's grid block and cell-naming rules.

::

    - paradigm: zeroshot
      models: [clip_vit_b32, "ollama:llama3.2-vision:11b"]   # as `dermbench zeroshot --model`
      prompt_sets: [bare_words, derm_ensemble]               # each one is a cell variant (settings.prompt_set)
      settings: {concurrency: 4}                             # validated by ZeroshotSettings

A zeroshot cell's variant is its prompt set (the default one for the model's kind when the
settings name none), then its weights when they are not the model's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from ...errors import UnknownNameError
from ...runs.block import GridBlock, unique
from .prompts import DEFAULT_PROMPT_SET, load_prompt_set
from .settings import ZeroshotSettings

if TYPE_CHECKING:
    from ...models import ModelSpec


def prompt_set_part(prompt_set: str | None, model: ModelSpec) -> str:
    """How the cell's label names its prompt set: the registered name, or a YAML file's stem
    (the default prompt set of the model's kind when the settings name none)."""
    if not prompt_set:
        return DEFAULT_PROMPT_SET[model.zeroshot_kind]
    return Path(prompt_set).stem if str(prompt_set).endswith((".yaml", ".yml")) else str(prompt_set)


class ZeroshotBlock(GridBlock):
    model_kind: ClassVar[str] = "zeroshot"
    settings_model: ClassVar[type] = ZeroshotSettings

    paradigm: Literal["zeroshot"]
    models: list[str] = Field(min_length=1, description="zeroshot model names (`dermbench ls zeroshot-models`) "
                                                        "or prefix names (ollama:, openai:, hf:, clip: ...)")
    prompt_sets: list[str] = Field(min_length=1, description="prompt set names (`dermbench ls prompt-sets`) or "
                                                             "YAML paths; each is a cell variant")

    @field_validator("models")
    @classmethod
    def _models_known(cls, v: list[str]) -> list[str]:
        return cls.canonical_names(v)

    @field_validator("prompt_sets")
    @classmethod
    def _prompt_sets_known(cls, v: list[str]) -> list[str]:
        problems = []
        for name in v:
            try:
                load_prompt_set(name)
            except (UnknownNameError, ValueError) as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return unique(v, "prompt set")

    def variant_axes(self) -> list[dict[str, Any]]:
        # The prompt set's content hash goes into the settings, so editing a prompt set's YAML
        # makes its complete cells "changed" (redone) rather than silently kept.
        return [{"prompt_set": ps, "prompt_set_hash": load_prompt_set(ps).content_hash} for ps in self.prompt_sets]

    def cell_settings(self, model: str) -> list[dict[str, Any]]:
        """As for every block, after checking each prompt set suits the model's kind (a dual encoder
        scores class prompts; a generative model answers a question)."""
        kind = self.resolve_model(model).zeroshot_kind
        wrong = [ps for ps in self.prompt_sets if load_prompt_set(ps).kind != kind]
        if wrong:
            raise ValueError(f"prompt set(s) {wrong} are not for {kind} models like {model}; "
                             f"use e.g. {DEFAULT_PROMPT_SET[kind]!r}")
        return super().cell_settings(model)

    @classmethod
    def variant_parts(cls, settings: dict[str, Any], model: ModelSpec) -> list[str]:
        return [prompt_set_part(settings.get("prompt_set"), model)] + super().variant_parts(settings, model)
