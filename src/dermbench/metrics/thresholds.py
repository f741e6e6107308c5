"""Operating-threshold policies, chosen on the validation split and then applied to test.

Policies (as written in configs):

- ``fixed:<t>``        use ``t`` (``fixed:0.5`` is what the MICCAI 2026 study did)
- ``youden``           maximise sensitivity + specificity - 1 on validation
- ``sensitivity:<s>``  the highest threshold whose validation sensitivity is >= ``s``
- ``specificity:<s>``  the lowest threshold whose validation specificity is >= ``s``
                       (the most sensitive operating point meeting the specificity target)

Candidate thresholds are the observed validation scores (pred = p >= threshold), so the chosen
threshold is a score the model actually produced; for ``specificity`` it can also be the float
just above the highest score (everything benign) when no observed score meets the target.
Youden ties (equal sensitivity + specificity) go to the highest threshold.

Degenerate validation: a data-driven policy needs the class(es) it optimises (both for
``youden``, malignant images for ``sensitivity``, benign images for ``specificity``). Without
them :func:`choose_threshold` raises :class:`ThresholdPolicyError` (a ValueError) that says so;
it never falls back silently. A caller that wants a fallback catches it and records the
``fixed:`` policy it used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _engine
from ._inputs import as_labels_scores
from ..errors import ThresholdPolicyError

ALLOWED_FORMS = ("fixed:<t> (e.g. fixed:0.5)", "youden", "sensitivity:<s> (e.g. sensitivity:0.9)",
                 "specificity:<s> (e.g. specificity:0.9)")

# Two candidates whose objective differs by less than this are tied (floating point only).
_TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class ThresholdPolicy:
    """A parsed policy: ``kind`` in fixed/youden/sensitivity/specificity; ``value`` its number."""

    kind: str
    value: float | None = None

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"


def parse_threshold_policy(policy: str | ThresholdPolicy) -> ThresholdPolicy:
    """Parse ``"fixed:0.5"``, ``"youden"``, ``"sensitivity:0.9"`` or ``"specificity:0.9"``.

    Raises :class:`ThresholdPolicyError` naming the allowed forms for anything else.
    """
    if isinstance(policy, ThresholdPolicy):
        return policy
    allowed = "; allowed forms: " + ", ".join(ALLOWED_FORMS)
    if not isinstance(policy, str):
        raise ThresholdPolicyError(f"threshold policy must be a string, got {policy!r}{allowed}")
    text = policy.strip().lower()
    kind, sep, number = text.partition(":")
    kind = kind.strip()
    if kind == "youden":
        if sep:
            raise ThresholdPolicyError(f"'youden' takes no value, got {policy!r}{allowed}")
        return ThresholdPolicy("youden")
    if kind not in ("fixed", "sensitivity", "specificity"):
        raise ThresholdPolicyError(f"unknown threshold policy {policy!r}{allowed}")
    if not sep or not number.strip():
        raise ThresholdPolicyError(f"threshold policy {policy!r} needs a value after ':'{allowed}")
    try:
        value = float(number)
    except ValueError:
        raise ThresholdPolicyError(
            f"threshold policy {policy!r}: {number.strip()!r} is not a number{allowed}"
        ) from None
    if kind == "fixed" and not 0.0 <= value <= 1.0:
        raise ThresholdPolicyError(f"fixed threshold must be in [0, 1] (a p_malignant cut), got {policy!r}")
    if kind != "fixed" and not 0.0 < value <= 1.0:
        raise ThresholdPolicyError(
            f"{kind} target must be in (0, 1] (e.g. {kind}:0.9 for 90%), got {policy!r}"
        )
    return ThresholdPolicy(kind, value)


def choose_threshold(policy: str | ThresholdPolicy, y_val=None, p_val=None) -> float:
    """The operating threshold ``policy`` picks on validation labels/scores (see module doc).

    ``fixed:<t>`` needs no validation data. Apply the result with pred = p >= threshold.
    """
    parsed = parse_threshold_policy(policy)
    if parsed.kind == "fixed":
        return float(parsed.value)
    if y_val is None or p_val is None:
        raise ThresholdPolicyError(f"threshold policy '{parsed}' needs validation labels and p_malignant")
    labels, scores = as_labels_scores(y_val, p_val)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    needs_pos = parsed.kind in ("youden", "sensitivity")
    needs_neg = parsed.kind in ("youden", "specificity")
    if (needs_pos and n_pos == 0) or (needs_neg and n_neg == 0):
        missing = "malignant" if needs_pos and n_pos == 0 else "benign"
        raise ThresholdPolicyError(
            f"threshold policy '{parsed}' cannot be applied: the validation split has no {missing} "
            f"images ({n_pos} malignant, {n_neg} benign). Use a fixed policy such as 'fixed:0.5' "
            "or a validation split with both classes"
        )
    table = _engine.ScoreTable(labels, scores)
    _, _, tps, fps = _engine.roc_counts(table, table.unit_weights())
    candidates = table.p[table.run_starts]  # distinct scores, descending
    tps, fps = tps[0], fps[0]
    if parsed.kind == "youden":
        youden = tps / n_pos - fps / n_neg
        best = int(np.argmax(youden >= youden.max() - _TIE_TOLERANCE))
        return float(candidates[best])
    if parsed.kind == "sensitivity":
        reaching = tps / n_pos >= parsed.value - _TIE_TOLERANCE
        return float(candidates[int(np.argmax(reaching))])  # the last point (TPR 1) always reaches
    specificity = 1.0 - fps / n_neg
    meeting = np.flatnonzero(specificity >= parsed.value - _TIE_TOLERANCE)
    if meeting.size == 0:
        return float(np.nextafter(candidates[0], np.inf))  # every image called benign
    return float(candidates[meeting[-1]])
