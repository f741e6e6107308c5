"""Why a metric has no value: the reasons written next to ``None`` in a result."""

from __future__ import annotations

import math

RANKING_NEEDS_BOTH = ("auroc", "auprc", "pauc")


def reason_for(
    name: str,
    *,
    n_pos: int,
    n_neg: int,
    n_pred_pos: int | None = None,
    n_pred_neg: int | None = None,
    threshold: float | None = None,
) -> str | None:
    """The reason ``name`` is undefined for these counts, or None when it is defined."""
    missing = _missing_class(n_pos, n_neg)
    if name in RANKING_NEEDS_BOTH or name.startswith("sens_at_spec"):
        return f"{missing}: ranking metrics need both classes" if missing else None
    if name in ("balanced_accuracy", "macro_f1"):
        return f"{missing}: {name} needs both classes" if missing else None
    if name == "sensitivity":
        return "no malignant images: sensitivity needs at least one" if n_pos == 0 else None
    if name == "specificity":
        return "no benign images: specificity needs at least one" if n_neg == 0 else None
    if name == "ppv" and n_pred_pos == 0:
        return f"no image predicted malignant at threshold {threshold:g}: PPV is 0/0"
    if name == "npv" and n_pred_neg == 0:
        return f"no image predicted benign at threshold {threshold:g}: NPV is 0/0"
    return None


def _missing_class(n_pos: int, n_neg: int) -> str | None:
    if n_pos == 0 and n_neg == 0:
        return "no images"
    if n_pos == 0:
        return "only benign images (no malignant)"
    if n_neg == 0:
        return "only malignant images (no benign)"
    return None


def to_optional_float(value) -> float | None:
    """NaN (the engine's 'undefined') -> None; anything else -> a plain Python float."""
    value = float(value)
    return None if math.isnan(value) else value


def reasons_for(names, values: dict, **counts) -> dict[str, str]:
    """Reasons for every name whose value is None (a generic one if no specific rule applies)."""
    reasons = {}
    for name in names:
        if values.get(name) is None:
            reasons[name] = reason_for(name, **counts) or "undefined for these predictions"
    return reasons
