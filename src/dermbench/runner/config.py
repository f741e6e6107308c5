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
    split_seeds: [0, 1, 2]          # optional: re-split each dataset per seed (same policy): mean ± sd over splits
    threshold_policy: youden        # operating threshold: fixed:0.5 (default, the study), youden, sensitivity:0.9 ...
    n_boot: 1000
    device: auto
    resources: {num_cpus: 1, num_gpus: 0}   # per cell: Ray request, worker sizing and torch CPU threads
    executor: {kind: local, workers: 1}
    imports: []                     # extra modules to import first (your own plugins)
    variables:                      # named values set once, used as ${name} in any string below
      weights_dir: ~/models         # (`--var weights_dir=/data/models` on the command line overrides)
    grid:                           # one block per paradigm run; its keys are the paradigm's own
      - paradigm: finetune
        models: [resnet18]
        balance: [balanced_aug, unbalanced]
      - paradigm: probe
        backbones: [efficientnet_lite0_imagenet]
        heads: [logreg, rf]

What a grid block of each paradigm holds (its model list, its variant lists, its settings model)
is declared by the paradigm (``paradigms/<p>/block.py``, a :class:`~dermbench.runs.block.GridBlock`);
this module builds the schema from the registered paradigms and names none of them. Keys every
block has: ``settings``, ``model_settings`` (per-model overrides), ``datasets``, ``seeds``,
``split_seeds``, ``resources``, ``threshold_policy``, ``eval_datasets`` (dataset names, or ``all``: each trained
finetune/probe cell is also evaluated on their test splits without retraining, see
:mod:`dermbench.runs.transfer`; on a zeroshot block they are simply more datasets to run on).

``variables`` are plain text substitution before validation: every ``${name}`` in a string value
of the config becomes the variable's value (a path set once, such as where the study's repository
or a model's local weights are); a ``${name}`` that is not declared is an error, as is a ``--var``
override of a name the config does not declare. No YAML anchors are needed for this.

Every mapping forbids unknown keys; an unknown key, a wrong type or a model name that
``dermbench.models.resolve`` does not know is a :class:`ConfigError` that names the key and lists
what is allowed. Nothing here imports torch (except to check a bare timm model name).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union

import yaml
from pydantic import Discriminator, Field, Tag, ValidationError, create_model, field_validator, model_validator

from ..errors import ConfigError
from ..runs.block import (GenericBlock, GridBlock, Resources, Seed, StrictModel, block_class, check_threshold_policy,
                          unique)
from ..runs.bounds import N_BOOT_MAX
from ..runs.cell import CellSpec

_GENERIC = "plugin"  # the union tag of paradigms registered without a block of their own


class Executor(StrictModel):
    kind: Literal["local", "ray"] = "local"
    workers: int = Field(1, ge=1, description="local worker processes (1 = in this process)")
    address: str | None = Field(None, description="Ray cluster address: auto, ray://host:10001 ... "
                                                  "(empty: start a local Ray instance)")


class SynthSpec(StrictModel):
    """Create a dataset folder with :func:`dermbench.data.synth.make_synthetic_dataset` if it is missing."""

    n: int = Field(600, ge=10)
    size: int = Field(128, ge=16)
    seed: Seed = 0
    malignant_fraction: float = Field(0.35, gt=0, lt=1)
    modality: Literal["mixed", "dermoscopic", "clinical"] = "mixed"


class DatasetSpec(StrictModel):
    path: str
    synth: SynthSpec | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name


class RunConfig(StrictModel):
    """A whole grid: which datasets, which models per paradigm, which seeds, and how to run it.

    Validate with :func:`parse_config`: ``grid`` is typed here by the base block; the model that
    validates a config types it by the registered paradigms' blocks (:func:`run_config_model`)."""

    experiment: str = Field(min_length=1)
    description: str = ""
    runs_root: str = "runs"
    data_root: str | None = None
    datasets: list[DatasetSpec] = Field(min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [CellSpec.seed], min_length=1)
    split_seeds: list[Seed] | None = Field(
        None, min_length=1, description="re-split every dataset once per seed (grouped, stratified, the policy it was "
                                        "prepared with; dermbench.data.resplit): each cell runs on every split, and "
                                        "the report gives mean ± sd over splits. None: the datasets' own split")
    threshold_policy: str = CellSpec.threshold_policy
    n_boot: int = Field(CellSpec.n_boot, ge=0, le=N_BOOT_MAX,
                        description=f"bootstrap replicates per cell, 0..{N_BOOT_MAX} (0 = no confidence intervals)")
    device: str = Field(CellSpec.device, pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="auto, cpu, cuda, cuda:N or mps")
    strict: bool = False
    resources: Resources = Field(default_factory=Resources)
    executor: Executor = Field(default_factory=Executor)
    imports: list[str] = Field(default_factory=list, description="modules imported before validation "
                                                                  "and in every worker (plugins)")
    variables: dict[str, str] = Field(default_factory=dict, description="values substituted for ${name} in the "
                                                                         "config's strings (see the module doc)")
    grid: list[GridBlock] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _dataset_names_as_mappings(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("datasets"), list):
            data = {**data, "datasets": [{"path": d} if isinstance(d, str) else d for d in data["datasets"]]}
        return data

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, v: list[int]) -> list[int]:
        return unique(v, "seed")

    @field_validator("split_seeds")
    @classmethod
    def _split_seeds_unique(cls, v: list[int] | None) -> list[int] | None:
        return v if v is None else unique(v, "split seed")

    @field_validator("n_boot", mode="before")
    @classmethod
    def _n_boot_not_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):  # pydantic would read `true` as 1 replicate: CIs of one resample
            raise ValueError(f"n_boot is a whole number of bootstrap replicates in 0..{N_BOOT_MAX}, got {v}")
        return v

    @field_validator("threshold_policy")
    @classmethod
    def _policy_known(cls, v: str) -> str:
        return check_threshold_policy(v)

    @model_validator(mode="after")
    def _check_datasets_and_cells(self) -> "RunConfig":
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
            if isinstance(block.eval_datasets, list):
                for name in block.eval_datasets:
                    if name not in names:
                        raise ValueError(f"grid[{i}].eval_datasets names {name!r}, which is not in datasets "
                                         f"({', '.join(names)})")
            for model in block.model_names():
                try:  # validated here so a bad setting fails before the grid runs
                    block.cell_settings(model)
                except ValueError as exc:
                    raise ValueError(f"grid[{i}] ({block.paradigm}, model {model!r}): {exc}") from None
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
# the schema of the registered paradigms
# ---------------------------------------------------------------------------------------------
def paradigm_blocks() -> dict[str, type[GridBlock]]:
    """Paradigm name -> its declared grid block, for every registered paradigm that declares one."""
    from ..paradigms import PARADIGMS

    blocks = {}
    for entry in PARADIGMS:
        block = block_class(entry.name)
        if block is not GenericBlock:
            blocks[entry.name] = block
    return blocks


_MODELS: dict[tuple, type[RunConfig]] = {}


def run_config_model() -> type[RunConfig]:
    """:class:`RunConfig` whose ``grid`` holds the blocks of the paradigms registered now (plugins
    imported first), told apart by their ``paradigm`` key."""
    blocks = paradigm_blocks()
    key = tuple((name, id(cls)) for name, cls in blocks.items())
    if key not in _MODELS:
        def kind(value: Any) -> str:
            paradigm = value.get("paradigm") if isinstance(value, dict) else getattr(value, "paradigm", None)
            return paradigm if paradigm in blocks else _GENERIC

        members = tuple(Annotated[cls, Tag(name)] for name, cls in blocks.items())
        block_type = Annotated[Union[members + (Annotated[GenericBlock, Tag(_GENERIC)],)],  # type: ignore[valid-type]
                               Discriminator(kind)]
        _MODELS[key] = create_model("RunConfig", __base__=RunConfig,
                                    grid=(list[block_type], Field(min_length=1)))  # type: ignore[valid-type]
    return _MODELS[key]


def import_plugins(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"imports: cannot import plugin module {name!r} ({exc}); is it on PYTHONPATH?") from exc


# ---------------------------------------------------------------------------------------------
# reading a config
# ---------------------------------------------------------------------------------------------
def _loc(loc: tuple, tags: set[str]) -> str:
    parts: list[str] = []
    for p in loc:
        if p in tags and parts and parts[-1].endswith("]"):
            continue  # the union tag, not a key the user wrote
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts)


_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def substitute_variables(data: dict[str, Any], overrides: Mapping[str, str] | None = None,
                         source: str = "config") -> dict[str, Any]:
    """``data`` with every ``${name}`` in its string values replaced by the variable's value.

    Values come from the config's ``variables`` mapping, then ``overrides`` (``--var NAME=VALUE``),
    which may only name declared variables (a typo would otherwise be silently ignored). Keys are
    not substituted, nor are variables inside variable values. The returned mapping's ``variables``
    holds the values used, so the resolved config records them."""
    declared = data.get("variables") or {}
    if not isinstance(declared, dict):
        raise ConfigError(f"{source}: variables must be a mapping of name: value, got {type(declared).__name__}")
    problems = []
    values: dict[str, str] = {}
    for name, value in declared.items():
        if not _VARIABLE_NAME.fullmatch(str(name)):
            problems.append(f"variables: {name!r} is not a valid name (letters, digits and _, not starting with a digit)")
        elif isinstance(value, (dict, list)) or value is None:
            problems.append(f"variables.{name}: a variable is one value (text, number), got {value!r}")
        elif _VARIABLE.search(str(value)):
            problems.append(f"variables.{name}: a variable's value cannot use other variables ({value!r})")
        else:
            values[str(name)] = str(value)
    for name, value in (overrides or {}).items():
        if name not in declared:
            problems.append(f"--var {name}: the config declares no variable {name!r} "
                            f"(it declares: {', '.join(map(str, declared)) or 'none'})")
        else:
            values[name] = str(value)

    def substitute(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: substitute(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [substitute(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        unknown = [m for m in _VARIABLE.findall(value) if m not in values]
        if unknown:
            problems.append(f"{where}: {', '.join('${' + u + '}' for u in unknown)} is not a declared variable "
                            f"(variables: {', '.join(values) or 'none'})")
            return value
        return _VARIABLE.sub(lambda m: values[m.group(1)], value)

    out = substitute({k: v for k, v in data.items() if k != "variables"}, "")
    if problems:
        raise ConfigError(f"{source} is not a valid run config:\n  " + "\n  ".join(problems))
    if declared:
        out["variables"] = values
    return out


def parse_config(data: Any, source: str = "config", variables: Mapping[str, str] | None = None) -> RunConfig:
    """Validate a run config mapping; a :class:`ConfigError` lists every problem with its key.
    ``variables`` override the config's own (``--var``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    data = substitute_variables(data, variables, source)
    if isinstance(data.get("imports"), list):  # plugins register their paradigms before the schema is built
        try:
            import_plugins([str(m) for m in data["imports"]])
        except ValueError as exc:
            raise ConfigError(f"{source} is not a valid run config:\n  {exc}") from None
    model = run_config_model()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        tags = set(paradigm_blocks()) | {_GENERIC}
        lines = []
        for err in exc.errors(include_url=False):
            loc = _loc(err.get("loc", ()), tags)
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            if err.get("type") == "missing":
                msg = "required key is missing"
            if not loc and msg.startswith(("grid[", "datasets:")):
                lines.append(f"  {msg}")  # a whole-config check: its message starts with the key
            else:
                lines.append(f"  {loc or '(top level)'}: {msg}")
        if data.get("variables"):  # a path built from a variable may be what is wrong: say what was used
            used = ", ".join(f"{k}={v}" for k, v in data["variables"].items())
            lines.append(f"  (variables used: {used}; set one with --var NAME=VALUE)")
        raise ConfigError(f"{source} is not a valid run config:\n" + "\n".join(lines)) from None


def load_config(path: str | Path, variables: Mapping[str, str] | None = None) -> RunConfig:
    """Read and validate a YAML run config (:func:`dermbench.utils.yamlio.load_yaml`: duplicate keys
    and alias bombs are refused); ``variables`` override its own."""
    path = Path(path)
    if not path.is_file():
        packaged = packaged_config(str(path))
        if packaged is None:
            raise ConfigError(f"config file {path} does not exist (packaged configs: "
                              f"{', '.join(packaged_config_names())})")
        path = packaged
    try:
        from ..utils.yamlio import load_yaml

        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_config(data, str(path), variables)


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
