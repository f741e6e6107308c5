"""The grid configuration (PRODUCT §8): one YAML file, validated at the edge by pydantic.

::

    experiment: demo                # names the folder under the runs root
    runs_root: runs                 # where cell records go (``--runs`` overrides)
    data_root: datasets             # base folder of relative dataset paths (``--data-root`` overrides)
    datasets:
      - synth                       # a folder name/path (relative to data_root) ...
      - path: synth_small           # ... or a mapping; ``synth`` creates it with `dermbench synth`
        synth: {n: 300, size: 64, seed: 0}
    seeds: [42]
    threshold_policy: youden        # operating threshold: fixed:0.5 (default, the study), youden, sensitivity:0.9 ...
    n_boot: 1000
    device: auto
    resources: {num_cpus: 1, num_gpus: 0}   # per cell: Ray request, worker sizing and torch CPU threads
    executor: {kind: local, workers: 1}
    imports: []                     # extra modules to import first (your own plugins)
    grid:
      - paradigm: finetune
        models: [resnet18]
        balance: [balanced_aug, unbalanced]   # each one is a cell variant (settings.balance)
        settings: {...}             # validated by FinetuneSettings
        model_settings: {resnet18: {...}}     # per-model overrides of settings
      - paradigm: probe
        backbones: [efficientnet_lite0_imagenet]
        heads: [logreg, rf]                   # each head is a cell variant (settings.head)
        label_fractions: [0.1, 1.0]           # optional: probe curves (settings.label_fraction)
      - paradigm: zeroshot
        models: [clip_vit_b32]
        prompt_sets: [simple]                  # each prompt set is a cell variant

Every mapping forbids unknown keys; an unknown key, a wrong type or a model name that is not
registered is a :class:`ConfigError` that names the key and lists what is allowed. Model names are
checked against the plugin registries (``dermbench ls``), and a block's ``settings`` against the
paradigm's pydantic settings model when that module exists. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator,
                      model_validator)

from ..errors import ConfigError


# ---------------------------------------------------------------------------------------------
# base model: unknown keys are errors that list the allowed keys (with a did-you-mean)
# ---------------------------------------------------------------------------------------------
class _Strict(BaseModel):
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


def _check_names(kind: str, names: list[str]) -> list[str]:
    """Check registry names (``kind`` as in ``dermbench ls``); did-you-mean errors for unknown ones."""
    from ..plugins import get_registry

    registry = get_registry(kind)
    problems = []
    resolved = []
    for name in names:
        if name in registry:
            resolved.append(registry.entry(name).name)
        else:
            problems.append(registry.unknown_message(name) if len(registry)
                            else f"unknown {registry.kind} {name!r}: no {kind} are registered in this build")
    if problems:
        raise ValueError("; ".join(problems))
    if len(set(n.lower() for n in resolved)) != len(resolved):
        raise ValueError(f"names repeat: {resolved}")
    return resolved


def _unique(values: list[Any], what: str) -> list[Any]:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} is listed twice")
        seen.add(v)
    return values


# ---------------------------------------------------------------------------------------------
# pieces
# ---------------------------------------------------------------------------------------------
class Resources(_Strict):
    """What one cell asks of a worker: Ray's ``num_cpus`` / ``num_gpus`` (fractions allowed)."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_gb: float | None = Field(None, gt=0, description="Ray memory request per cell, in GiB")


class Executor(_Strict):
    kind: Literal["local", "ray"] = "local"
    workers: int = Field(1, ge=1, description="local worker processes (1 = in this process)")
    address: str | None = Field(None, description="Ray cluster address: auto, ray://host:10001 ... "
                                                  "(empty: start a local Ray instance)")


class SynthSpec(_Strict):
    """Create a dataset folder with :func:`dermbench.data.synth.make_synthetic_dataset` if it is missing."""

    n: int = Field(600, ge=10)
    size: int = Field(128, ge=16)
    seed: int = 0
    malignant_fraction: float = Field(0.35, gt=0, lt=1)


class DatasetSpec(_Strict):
    path: str
    synth: SynthSpec | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name


def _dataset_entry(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


class _Block(_Strict):
    """Keys every paradigm block has."""

    settings: dict[str, Any] = Field(default_factory=dict, description="the paradigm's settings")
    model_settings: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                      description="per-model overrides of settings")
    datasets: list[str] | None = Field(None, description="restrict this block to these dataset names")
    seeds: list[int] | None = Field(None, description="override the top-level seeds for this block")
    resources: Resources | None = None
    threshold_policy: str | None = None

    @field_validator("threshold_policy")
    @classmethod
    def _policy_known(cls, v: str | None) -> str | None:
        return v if v is None else check_threshold_policy(v)

    @property
    def paradigm_name(self) -> str:
        return self.paradigm  # type: ignore[attr-defined]

    def model_names(self) -> list[str]:
        return list(self.models)  # type: ignore[attr-defined]

    def variant_axes(self) -> list[tuple[str, dict[str, Any]]]:
        """``(variant label, settings it sets)`` for each variant of the block. An empty label is
        filled from the validated settings (see :meth:`cell_variants`)."""
        return [("", {})]

    @model_validator(mode="after")
    def _check_model_settings(self) -> "_Block":
        unknown = [m for m in self.model_settings if m.lower() not in {n.lower() for n in self.model_names()}]
        if unknown:
            raise ValueError(f"model_settings names model(s) {unknown} that this block does not run; "
                             f"its models are {self.model_names()}")
        return self

    def cell_variants(self, model: str) -> list[tuple[str, dict[str, Any]]]:
        """``(variant, settings)`` of every cell of ``model``: the block settings, the model's
        overrides and the variant's own settings, validated by the paradigm's settings model."""
        base = dict(self.settings)
        for name, override in self.model_settings.items():
            if name.lower() == model.lower():
                base.update(override)
        out = []
        for label, updates in self.variant_axes():
            settings = validate_settings(self.paradigm_name, {**base, **updates})
            out.append((label or self.variant_label(settings), settings))
        labels = [label for label, _ in out]
        if len(set(labels)) != len(labels):
            raise ValueError(f"variants of model {model!r} repeat: {labels}")
        return out

    def variant_label(self, settings: dict[str, Any]) -> str:
        return ""


class FinetuneBlock(_Block):
    paradigm: Literal["finetune"]
    models: list[str] = Field(min_length=1, description="finetune-models registry names")
    balance: list[str] | None = Field(None, description="training-set balancing modes; each is a cell "
                                                        "variant (default: the one in settings)")

    @field_validator("models")
    @classmethod
    def _models_registered(cls, v: list[str]) -> list[str]:
        return _check_names("finetune-models", v)

    @field_validator("balance")
    @classmethod
    def _balance_known(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        allowed = balancing_modes()
        if allowed:
            bad = [b for b in v if b not in allowed]
            if bad:
                raise ValueError(f"unknown balancing mode(s) {bad}; allowed: {', '.join(allowed)}")
        return _unique(v, "balancing mode")

    def variant_axes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(mode, {"balance": mode}) for mode in self.balance] if self.balance else [("", {})]


class ProbeBlock(_Block):
    paradigm: Literal["probe"]
    backbones: list[str] = Field(min_length=1, description="backbones registry names")
    heads: list[str] = Field(min_length=1, description="heads registry names; each is a cell variant")
    label_fractions: list[float] | None = Field(
        None, description="train-label fractions for probe curves (e.g. [0.01, 0.05, 0.1, 0.25, 1.0]); "
                          "each is a cell variant")

    @field_validator("backbones")
    @classmethod
    def _backbones_registered(cls, v: list[str]) -> list[str]:
        return _check_names("backbones", v)

    @field_validator("heads")
    @classmethod
    def _heads_registered(cls, v: list[str]) -> list[str]:
        return _check_names("heads", v)

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            bad = [f for f in v if not 0 < f <= 1]
            if bad:
                raise ValueError(f"label fractions must lie in (0, 1]; got {bad}")
            _unique(v, "label fraction")
        return v

    def model_names(self) -> list[str]:
        return list(self.backbones)

    def variant_axes(self) -> list[tuple[str, dict[str, Any]]]:
        fractions = self.label_fractions or [None]
        return [("", {"head": head, **({"label_fraction": f} if f is not None else {})})
                for head in self.heads for f in fractions]

    def variant_label(self, settings: dict[str, Any]) -> str:
        """The probe paradigm's own label (head + label fraction + balancing ...) when available."""
        model = settings_model("probe")
        if model is not None and hasattr(model, "variant"):
            return model.model_validate(settings).variant()
        fraction = settings.get("label_fraction", 1.0)
        return settings["head"] + (f"+frac{fraction:g}" if fraction != 1.0 else "")


class ZeroshotBlock(_Block):
    """Zeroshot cells: the prompt set is the cell's variant (``CellSpec.variant``)."""

    paradigm: Literal["zeroshot"]
    models: list[str] = Field(min_length=1, description="zeroshot-models registry names")
    prompt_sets: list[str] = Field(min_length=1, description="prompt-sets registry names; each is a cell variant")

    @field_validator("models")
    @classmethod
    def _models_registered(cls, v: list[str]) -> list[str]:
        return _check_names("zeroshot-models", v)

    @field_validator("prompt_sets")
    @classmethod
    def _prompts_registered(cls, v: list[str]) -> list[str]:
        return _check_names("prompt-sets", v)

    def variant_axes(self) -> list[tuple[str, dict[str, Any]]]:
        # The prompt set's content hash goes into the settings, so editing a prompt set's YAML
        # makes its complete cells "changed" (redone) rather than silently kept.
        from ..paradigms.zeroshot.prompts import load_prompt_set

        return [(ps, {"prompt_set_hash": load_prompt_set(ps).content_hash}) for ps in self.prompt_sets]


class PluginBlock(_Block):
    """A paradigm added by a plugin (``imports:``); its names are not checked against a registry."""

    paradigm: str
    models: list[str] = Field(min_length=1)
    variants_: list[str] = Field(default_factory=lambda: [""], alias="variants")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:  # "variants" is the alias of variants_
        if isinstance(data, dict):
            allowed = [k for k in cls.model_fields if k != "variants_"] + ["variants"]
            unknown = [k for k in data if k not in allowed]
            if unknown:
                raise ValueError(f"unknown key(s) {unknown}; allowed keys: {', '.join(allowed)}")
        return data

    @field_validator("paradigm")
    @classmethod
    def _paradigm_registered(cls, v: str) -> str:
        from ..paradigms import PARADIGMS

        if v not in PARADIGMS:
            raise ValueError(PARADIGMS.unknown_message(v))
        return v

    def variant_axes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(v, {}) for v in self.variants_]


_BUILTIN = ("finetune", "probe", "zeroshot")


def _block_kind(value: Any) -> str:
    paradigm = value.get("paradigm") if isinstance(value, dict) else getattr(value, "paradigm", None)
    return paradigm if paradigm in _BUILTIN else "plugin"


Block = Annotated[
    Union[Annotated[FinetuneBlock, Tag("finetune")], Annotated[ProbeBlock, Tag("probe")],
          Annotated[ZeroshotBlock, Tag("zeroshot")], Annotated[PluginBlock, Tag("plugin")]],
    Discriminator(_block_kind),
]


class RunConfig(_Strict):
    """A whole grid: which datasets, which models per paradigm, which seeds, and how to run it."""

    experiment: str = Field(min_length=1)
    description: str = ""
    runs_root: str = "runs"
    data_root: str | None = None
    datasets: list[DatasetSpec] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    threshold_policy: str = "fixed:0.5"
    n_boot: int = Field(1000, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="auto, cpu, cuda, cuda:N or mps")
    strict: bool = False
    resources: Resources = Field(default_factory=Resources)
    executor: Executor = Field(default_factory=Executor)
    imports: list[str] = Field(default_factory=list, description="modules imported before validation "
                                                                  "and in every worker (plugins)")
    grid: list[Block] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _import_plugins_first(cls, data: Any) -> Any:
        # plugins must be registered before the grid's names are checked
        if isinstance(data, dict):
            if isinstance(data.get("imports"), list):
                import_plugins([str(m) for m in data["imports"]])
            if isinstance(data.get("datasets"), list):
                data = {**data, "datasets": [_dataset_entry(d) for d in data["datasets"]]}
        return data

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, v: list[int]) -> list[int]:
        return _unique(v, "seed")

    @field_validator("threshold_policy")
    @classmethod
    def _policy_known(cls, v: str) -> str:
        return check_threshold_policy(v)

    @model_validator(mode="after")
    def _check_datasets(self) -> "RunConfig":
        names = [d.name for d in self.datasets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"datasets: folder name(s) {dup} appear twice; a cell is identified by the "
                             f"dataset's folder name, so give each dataset its own folder name")
        for i, block in enumerate(self.grid):
            for name in block.datasets or []:
                if name not in names:
                    raise ValueError(f"grid[{i}].datasets names {name!r}, which is not in datasets "
                                     f"({', '.join(names)})")
            for model in block.model_names():
                try:  # validated here so a bad setting fails before the grid runs
                    block.cell_variants(model)
                except ValueError as exc:
                    raise ValueError(f"grid[{i}] ({block.paradigm_name}, model {model!r}): {exc}") from None
        return self

    def dataset_paths(self, data_root: str | Path | None = None) -> dict[str, Path]:
        """Dataset name -> absolute folder. Relative dataset paths are taken from ``data_root``
        (the argument, else the config's ``data_root``, else the working directory)."""
        root = Path(data_root or self.data_root or ".").expanduser()
        out = {}
        for d in self.datasets:
            p = Path(d.path).expanduser()
            out[d.name] = (p if p.is_absolute() else root / p).absolute()
        return out


# ---------------------------------------------------------------------------------------------
# helpers that look at other parts of the package lazily
# ---------------------------------------------------------------------------------------------
def import_plugins(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"imports: cannot import plugin module {name!r} ({exc}); is it on PYTHONPATH?") from exc


_SETTINGS_CLASSES = {"finetune": "FinetuneSettings", "probe": "ProbeSettings", "zeroshot": "ZeroshotSettings"}


def settings_model(paradigm: str) -> type[BaseModel] | None:
    """The paradigm's pydantic settings model (``paradigms/<p>/settings.py``), or None if absent."""
    module_name = f"dermbench.paradigms.{paradigm}.settings"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (module_name, f"dermbench.paradigms.{paradigm}"):
            return None
        raise
    return getattr(module, _SETTINGS_CLASSES.get(paradigm, ""), None)


def validate_settings(paradigm: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Validate ``settings`` with the paradigm's settings model; return the full plain dict."""
    model = settings_model(paradigm)
    if model is None:
        return dict(settings)
    try:
        preset = settings.get("preset")
        if preset is not None and hasattr(model, "from_preset"):
            # a named preset is the starting point; the other keys override it
            rest = {k: v for k, v in settings.items() if k != "preset"}
            return model.from_preset(preset, **rest).model_dump(mode="json")
        return model.model_validate(settings).model_dump(mode="json")
    except ValidationError as exc:
        fields = ", ".join(model.model_fields)
        raise ValueError(f"{paradigm} settings: {_format_errors(exc, '')}; "
                         f"{model.__name__} has: {fields}") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{paradigm} settings: {exc}") from None


def balancing_modes() -> list[str]:
    """Balancing modes the finetune paradigm accepts (from its settings model when present)."""
    model = settings_model("finetune")
    if model is None:
        return []
    for key in ("balance", "balancing"):
        field = model.model_fields.get(key)
        if field is not None:
            args = getattr(field.annotation, "__args__", ())
            if args and all(isinstance(a, str) for a in args):
                return list(args)
    return []


def check_threshold_policy(policy: str) -> str:
    """Check a threshold policy string with the metrics module's parser."""
    from ..metrics.thresholds import parse_threshold_policy

    try:
        parse_threshold_policy(policy)
    except (ValueError, KeyError) as exc:
        # the message names the policy; the error's location names the key
        raise ValueError(exc.args[0] if exc.args else str(exc)) from None
    return policy


def _format_errors(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = _loc(err.get("loc", ()))
        msg = err.get("msg", "")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "union_tag_invalid":
            msg = f"unknown paradigm; use one of {', '.join(_BUILTIN)} or a registered plugin paradigm"
        key = ".".join(p for p in (where, loc) if p)
        lines.append(f"{key}: {msg}" if key else msg)
    return "; ".join(lines) if where == "" else "\n  ".join(lines)


def _loc(loc: tuple) -> str:
    parts = []
    for p in loc:
        if p in ("finetune", "probe", "zeroshot", "plugin") and parts and parts[-1].endswith("]"):
            continue  # the union tag, not a key the user wrote
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts)


def parse_config(data: Any, source: str = "config") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = _loc(err.get("loc", ()))
            msg = err.get("msg", "")
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if err.get("type") == "missing":
                msg = "required key is missing"
            if not loc and msg.startswith(("grid[", "datasets:")):
                lines.append(f"  {msg}")  # a whole-config check: its message starts with the key
            else:
                lines.append(f"  {loc or '(top level)'}: {msg}")
        raise ConfigError(f"{source} is not a valid run config:\n" + "\n".join(lines)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config (``yaml.safe_load``)."""
    path = Path(path)
    if not path.is_file():
        packaged = packaged_config(str(path))
        if packaged is None:
            raise ConfigError(f"config file {path} does not exist (packaged configs: "
                              f"{', '.join(packaged_config_names())})")
        path = packaged
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_config(data, str(path))


def packaged_config(name: str) -> Path | None:
    """A config shipped in ``dermbench/configs`` (``demo``, ``configs/paper.yaml`` ...)."""
    folder = Path(__file__).resolve().parent.parent / "configs"
    stem = Path(name).name
    for candidate in (folder / stem, folder / f"{stem}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def packaged_config_names() -> list[str]:
    folder = Path(__file__).resolve().parent.parent / "configs"
    return sorted(p.name for p in folder.glob("*.yaml"))
