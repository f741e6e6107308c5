"""Metric names, their order and their direction, shared by every paradigm and the report."""

from __future__ import annotations

#: Specificities at which sensitivity is reported by default (``sens_at_spec80`` ...).
DEFAULT_SPECIFICITIES: tuple[float, ...] = (0.8, 0.9, 0.95)

#: The ISIC 2024 pAUC floor: area of the ROC region where TPR >= 0.8.
DEFAULT_PAUC_MIN_TPR = 0.8

#: Number of equal-width p_malignant bins for the expected calibration error.
DEFAULT_ECE_BINS = 10


def sens_at_spec_name(specificity: float) -> str:
    """``0.9`` -> ``"sens_at_spec90"``; ``0.975`` -> ``"sens_at_spec97.5"``."""
    percent = round(float(specificity) * 100, 6)
    text = f"{percent:g}"
    return f"sens_at_spec{text}"


THRESHOLD_FREE_NAMES: tuple[str, ...] = (
    "auroc",
    "auprc",
    "pauc",
    *(sens_at_spec_name(s) for s in DEFAULT_SPECIFICITIES),
    "brier",
    "ece",
)

AT_THRESHOLD_NAMES: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
)

#: Every scalar metric ``evaluate`` reports, in report order.
METRIC_NAMES: tuple[str, ...] = THRESHOLD_FREE_NAMES + AT_THRESHOLD_NAMES

#: Direction of each metric: True when a larger value is better (Brier and ECE are errors).
HIGHER_IS_BETTER: dict[str, bool] = {name: name not in ("brier", "ece") for name in METRIC_NAMES}

CONFUSION_NAMES: tuple[str, ...] = ("tn", "fp", "fn", "tp")
