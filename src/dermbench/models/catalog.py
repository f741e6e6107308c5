"""The one table of named models: ``configs/models.yaml`` read into :class:`ModelSpec` entries.

Every model dermbench knows by name is one entry there, whatever it is used as (a model that is
both a probe backbone and a dual encoder, such as BiomedCLIP, is one entry with two kinds), and
its description, licence and source live only there. Reading the table imports PyYAML, never a
framework; it is read once per process.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from ..errors import ConfigError
from .frameworks import FRAMEWORKS
from .spec import DEFAULT_WEIGHTS, KINDS, ZEROSHOT_KINDS, ModelSpec

CATALOG_FILE = "models.yaml"
_FIELDS = {"kinds", "study", "framework", "model_id", "description", "source", "licence", "note", "extra",
           "weights", "options"}


def _entry_spec(name: str, entry: Any) -> ModelSpec:
    where = f"{CATALOG_FILE}: model {name!r}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not a mapping")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}")
    if name != name.strip().lower():
        raise ConfigError(f"{where}: catalog names are canonical and lower-case")
    kinds = tuple(entry.get("kinds") or ())
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise ConfigError(f"{where}: kinds must be a non-empty list of {KINDS}, got {list(kinds)}")
    if all(k in kinds for k in ZEROSHOT_KINDS):
        raise ConfigError(f"{where}: a model is a dual encoder or a generative VLM, not both")
    framework = entry.get("framework")
    if framework not in FRAMEWORKS:
        raise ConfigError(f"{where}: framework must be one of {sorted(FRAMEWORKS)}, got {framework!r}")
    unsupported = [k for k in kinds if k not in FRAMEWORKS[framework].kinds]
    if unsupported:
        raise ConfigError(f"{where}: framework {framework!r} cannot build {unsupported}")
    if not entry.get("model_id"):
        raise ConfigError(f"{where} needs a model_id (what {framework} loads)")
    study = entry.get("study") or ()
    study = kinds if study is True else tuple(study)
    if any(k not in kinds for k in study):
        raise ConfigError(f"{where}: study lists kinds the entry does not have ({list(study)} vs {list(kinds)})")
    for key in ("description", "source", "licence"):
        if not entry.get(key):
            raise ConfigError(f"{where} needs a {key}")
    return ModelSpec(name=name, kinds=kinds, framework=framework, model_id=str(entry["model_id"]),
                     description=str(entry["description"]), licence=str(entry["licence"]),
                     source=str(entry["source"]), study_kinds=study,
                     extra=entry.get("extra") or FRAMEWORKS[framework].extra,
                     default_weights=str(entry.get("weights") or DEFAULT_WEIGHTS),
                     options=dict(entry.get("options") or {}), note=str(entry.get("note") or ""))


@lru_cache(maxsize=1)
def _load() -> dict[str, ModelSpec]:
    import yaml

    text = resources.files("dermbench.configs").joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    table = (yaml.safe_load(text) or {}).get("models") or {}
    return {str(name): _entry_spec(str(name), entry) for name, entry in table.items()}


def catalog() -> dict[str, ModelSpec]:
    """Every named model, canonical name -> spec (a copy: callers may not change the table)."""
    return dict(_load())


def model_names(kind: str | None = None) -> list[str]:
    """Sorted catalog names usable as ``kind`` (``classifier``, ``backbone``, ``dual_encoder``,
    ``generative`` or ``zeroshot``); every name when ``kind`` is None."""
    return sorted(name for name, spec in _load().items() if kind is None or spec.supports(kind))
