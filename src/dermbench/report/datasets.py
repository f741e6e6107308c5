"""The report's "datasets" section and the notes attached to configurations.

**Datasets.** What a reader needs to know about the data behind the numbers, from the run
records (each carries its dataset card's essentials: ``metrics.json`` ``dataset.provenance``):
source and licence, the label definition and mapping, the premalignant policy, the rows
``prepare`` excluded (by reason, of how many read), subsampling, the split policy, its seed and the
split as made, re-splits by ``split_seeds``, and likely same-lesion grouping.

**Configuration notes.** Facts about how a configuration's numbers were obtained that change how
far they can be trusted: hyperparameters chosen by cross-validation because the validation split
was tiny, and a chosen hyperparameter at the edge of its grid (the optimum may lie outside it).
"""

from __future__ import annotations

from typing import Any

from .collect import CellRecord


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _mapping_text(mapping: Any) -> str:
    if isinstance(mapping, dict) and mapping and all(isinstance(v, str) for v in mapping.values()):
        by_label: dict[str, list[str]] = {}
        for key, label in mapping.items():
            by_label.setdefault(label, []).append(str(key))
        return "; ".join(f"{label}: {', '.join(keys)}" for label, keys in sorted(by_label.items()))
    if isinstance(mapping, dict) and isinstance(mapping.get("mapping"), dict):  # synth: {column, mapping}
        return f"{mapping.get('column', '?')} → " + _mapping_text(mapping["mapping"])
    return "not recorded"


def dataset_rows(cells: list[CellRecord]) -> list[tuple[str, str]]:
    """(field, text) rows describing the dataset of ``cells`` (all of one dataset)."""
    records = [(c.metrics.get("dataset") or {}) for c in cells]
    prov = next((r.get("provenance") for r in records if r.get("provenance")), None) or {}
    first = records[0] if records else {}
    fingerprints = sorted({str(r.get("fingerprint"))[:12] for r in records if r.get("fingerprint")})
    rows: list[tuple[str, str]] = []
    source = prov.get("source_title") or prov.get("source") or "not recorded"
    if prov.get("source") and prov.get("source_title"):
        source += f" ({prov['source']})"
    rows.append(("source", source + (f" — {prov['url']}" if prov.get("url") else "")))
    rows.append(("licence", prov.get("licence") or "not recorded"))
    definition = prov.get("label_definition") or first.get("label_definition") or "not recorded"
    if prov.get("label_definition_note"):
        definition += f" ({prov['label_definition_note']})"
    rows.append(("label definition", definition))
    rows.append(("label mapping", (f"from {prov['label_source']}: " if prov.get("label_source") else "")
                 + _mapping_text(prov.get("label_mapping"))))
    rows.append(("premalignant policy", str(prov.get("premalignant_policy") or first.get("premalignant_policy")
                                            or "not recorded")))
    excl = prov.get("prepare_exclusions") or {}
    if excl.get("recorded"):
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(excl.get("by_reason", {}).items())) or "none"
        read = excl.get("rows_read")
        rows.append(("excluded by prepare", f"{excl.get('count', 0)}" + (f" of {read} rows read" if read else "")
                     + f" ({reasons})"))
    else:
        rows.append(("excluded by prepare", "not recorded (the dataset card does not say)"))
    rows.append(("subsampling", prov.get("subsampling") or "none"))
    split = prov.get("split") or {}
    made = split.get("counts")
    rows.append(("split policy", (split.get("policy") or "not recorded")
                 + (f" (seed {split['seed']})" if split.get("seed") is not None else "")
                 + (f"; made: {', '.join(f'{k} {v}' for k, v in made.items())}" if made else "")))
    split_seeds = sorted({c.split_seed for c in cells if c.split_seed is not None})
    if split_seeds:
        resplit = (split.get("resplit") or {}) if isinstance(split.get("resplit"), dict) else {}
        rows.append(("re-split per run", f"split seeds {', '.join(map(str, split_seeds))} "
                                         f"({resplit.get('spec_from', 'same policy')})"))
    similar = prov.get("group_similar")
    if similar:
        rows.append(("likely same-lesion groups", f"{similar.get('groups')} group(s) of {similar.get('images_grouped')} "
                                                  f"images kept in one split ({similar.get('backbone')}, cosine ≥ "
                                                  f"{similar.get('threshold')})"))
    rows.append(("content fingerprint", ", ".join(fingerprints) + (" — the runs saw different dataset contents"
                                                                   if len(fingerprints) > 1 else "")))
    return rows


def datasets_section(cells: list[CellRecord]) -> list[dict[str, Any]]:
    """One entry per dataset (sorted): its name and :func:`dataset_rows`."""
    by_dataset: dict[str, list[CellRecord]] = {}
    for c in cells:
        by_dataset.setdefault(c.dataset, []).append(c)
    return [{"name": name, "rows": dataset_rows(group)} for name, group in sorted(by_dataset.items())]


def configuration_notes(cells: list[CellRecord], dataset: str) -> list[dict[str, str]]:
    """Per configuration of ``dataset``: how its hyperparameters were chosen when that matters
    (cross-validation on a tiny validation split) and any chosen value at the edge of its grid,
    counted over the configuration's runs."""
    by_entry: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        if c.dataset == dataset:
            head = (c.extra or {}).get("head")
            if isinstance(head, dict):
                by_entry.setdefault(c.entry, []).append(head)
    notes = []
    for entry, heads in sorted(by_entry.items()):
        runs = len(heads)
        cv = [h for h in heads if (h.get("selection") or {}).get("method") == "cv"]
        if cv:
            why = (cv[0].get("selection") or {}).get("reason", "")
            notes.append({"entry": entry, "note": f"hyperparameters chosen by grouped cross-validation on train + "
                                                  f"validation in {len(cv)} of {_plural(runs, 'run')} ({why})"})
        edges: dict[str, list[str]] = {}
        for h in heads:
            for edge in h.get("grid_edge") or []:
                edges.setdefault(f"{edge['param']}={edge['value']} ({edge['edge']} of {edge['grid']})", []).append("")
        for what, hits in edges.items():
            notes.append({"entry": entry, "note": f"chosen at the grid's edge: {what} in {len(hits)} of "
                                                  f"{_plural(runs, 'run')}; the best value may lie outside the grid"})
    return notes
