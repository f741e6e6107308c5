"""The study's published numbers and which dermbench cell each one belongs to (package data).

``study_results.csv`` holds the numbers published with dos Santos et al., "Bridging Research and
Practice: A Systematic Evaluation of Generalist and Dermatology-Specific Models in Clinical Skin
Lesion Classification", MICCAI 2026 (code and results: github.com/TIC-13/derm-bench). They are the
paper's data, not dermbench's: see ``README.md`` beside this file. ``study_mapping.yaml`` maps
each published ``(project, setting, model, dataset)`` to a cell of ``configs/paper.yaml`` and each
published metric to ours; :func:`study_cells` and :func:`metric_map` read it, and both the paper
grid's test and the report's comparison page use them, so the mapping lives in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "study_results.csv"
MAPPING_FILE = HERE / "study_mapping.yaml"

#: Columns that name a published cell.
STUDY_KEYS = ["project", "setting", "model", "dataset"]
#: Columns that name our cell of it.
OUR_KEYS = ["paradigm", "config_label", "dataset_folder"]

_WEIGHTS_PART = re.compile(r"\+w-[^+]*")


def study_results() -> pd.DataFrame:
    """The published numbers: ``project, setting, model, dataset, metric, value`` (2,185 rows)."""
    return _results().copy()


@lru_cache(maxsize=1)
def _results() -> pd.DataFrame:
    return pd.read_csv(RESULTS_FILE, dtype={"project": str, "setting": str, "model": str, "dataset": str,
                                            "metric": str, "value": float})


@lru_cache(maxsize=1)
def mapping() -> dict[str, Any]:
    """``study_mapping.yaml`` as it is."""
    return yaml.safe_load(MAPPING_FILE.read_text(encoding="utf-8"))


def citation() -> str:
    return " ".join(str(mapping()["paper"]).split())


def study_cells() -> pd.DataFrame:
    """One row per published cell: the study's keys, our ``paradigm``, ``config_label`` and
    ``dataset_folder``, the ``split`` its numbers are from and the study's ``study_split`` policy.

    Every published cell must map; one that does not is a ValueError naming it (the package data
    disagree with each other, which a test catches)."""
    return _cells().copy()


@lru_cache(maxsize=1)
def _cells() -> pd.DataFrame:
    m = mapping()
    cells = _results()[STUDY_KEYS].drop_duplicates().reset_index(drop=True)
    rows, problems = [], []
    for project, setting, model, dataset in cells.itertuples(index=False):
        try:
            rows.append({"project": project, "setting": setting, "model": model, "dataset": dataset,
                         **_our_cell(m, project, setting, model, dataset)})
        except KeyError as exc:
            problems.append(f"{project}/{setting}/{model}/{dataset}: no mapping for {exc.args[0]!r}")
    if problems:
        raise ValueError(f"{MAPPING_FILE.name} does not map {len(problems)} published cell(s): " + "; ".join(problems[:5]))
    return pd.DataFrame(rows)


def _our_cell(m: dict[str, Any], project: str, setting: str, model: str, dataset: str) -> dict[str, Any]:
    spec = m["projects"][project]
    ds = m["datasets"][dataset]
    head = None
    if "heads" in spec:
        model_part, _, head_part = model.partition("/")
        our_model, head = _model_name(spec["models"][model_part]), spec["heads"][head_part]
        dual = False
    else:
        entry = spec["models"][model]
        our_model, dual = _model_name(entry), isinstance(entry, dict) and bool(entry.get("dual_encoder"))
    setting_spec = spec["settings"][setting]
    template = spec["dual_encoder_label"] if dual else setting_spec["label"]
    return {"paradigm": spec["paradigm"], "config_label": template.format(model=our_model, setting=setting, head=head),
            "dataset_folder": ds["folder"], "split": setting_spec["split"], "study_split": ds["split"],
            "our_model": our_model, "dual_encoder": dual}


def _model_name(entry: Any) -> str:
    return str(entry["name"]) if isinstance(entry, dict) else str(entry)


@dataclass(frozen=True)
class MetricMapping:
    paper: str                 # the study's metric name
    ours: str | None           # the metric of ours it is compared with (None: not compared)
    why: str = ""              # why it is not compared, when it is not


def metric_map(project: str) -> dict[str, MetricMapping]:
    """Published metric -> :class:`MetricMapping` for rows of ``project`` (a project's own entry
    wins: a VLM's macro-F1 is compared with ``study_macro_f1``, since the study's counts an
    'error' class)."""
    out = {}
    for name, entry in mapping()["metrics"].items():
        ours = entry[project] if project in entry else entry.get("ours")
        out[name] = MetricMapping(name, ours, "" if ours else str(entry.get("why", "")))
    return out


def local_weights_models() -> set[str]:
    """Models whose weights are always a local folder the user names (``+w-<folder>`` in labels)."""
    return set(mapping().get("local_weights") or [])


def comparable_label(config_label: str, model: str) -> str:
    """``config_label`` as the mapping names it: for a model of :func:`local_weights_models`, its
    weights part (``+w-<folder>``) is dropped, since the folder's name is
    the user's choice; any other label is returned unchanged (random or other weights stay distinct)."""
    if model in local_weights_models():
        return _WEIGHTS_PART.sub("", config_label)
    return config_label


def study_test_counts() -> dict[str, tuple[int, int]]:
    """Dataset folder -> (benign, malignant) test images the study evaluated, from its published
    per-class supports (the CNN runs' ``support_*``; every project published the same counts)."""
    results = _results()
    folders = {name: spec["folder"] for name, spec in mapping()["datasets"].items()}
    support = results[(results["project"] == "cnn_vit") & results["metric"].isin(["support_benign", "support_malignant"])]
    out = {}
    for dataset, rows in support.groupby("dataset"):
        values = rows.groupby("metric")["value"].first()
        out[folders[dataset]] = (int(values["support_benign"]), int(values["support_malignant"]))
    return out
