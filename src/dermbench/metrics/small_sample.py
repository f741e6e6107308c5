"""When a sample is too small for its interval or its ranking to mean much.

A test set of 24 images with 6 malignant gives AUROC intervals as wide as the range of models
compared, a DeLong interval that leaves [-1, 1] (its normal approximation needs many cases of
each class), and "best model" verdicts decided by one image. These thresholds mark such results;
they do not hide them. The defaults (fewer than 100 images, or fewer than 20 of either class) are
conventions, not a law: the report takes them as options (``dermbench report --small-n
--small-positives``), and every mark says which numbers tripped it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: a test set below either of these is marked "small" in leaderboards and comparisons
SMALL_N_IMAGES = 100
SMALL_N_POSITIVES = 20


@dataclass(frozen=True)
class SmallSampleRule:
    """Below ``min_images`` images, or ``min_positives`` malignant (or benign) ones, a result is
    marked small."""

    min_images: int = SMALL_N_IMAGES
    min_positives: int = SMALL_N_POSITIVES

    def __post_init__(self) -> None:
        if int(self.min_images) < 0 or int(self.min_positives) < 0:
            raise ValueError(f"small-sample thresholds must be >= 0, got {self.min_images}, {self.min_positives}")

    def is_small(self, n: int | None, n_malignant: int | None, n_benign: int | None = None) -> bool:
        if n is None:
            return False
        if n < self.min_images:
            return True
        if n_malignant is not None and n_malignant < self.min_positives:
            return True
        return n_benign is not None and n_benign < self.min_positives

    def note(self, n: int | None, n_malignant: int | None, n_benign: int | None = None) -> str:
        """``""`` when the sample is large enough, else what makes it small."""
        if not self.is_small(n, n_malignant, n_benign):
            return ""
        parts = [f"n={n}"]
        if n_malignant is not None:
            parts.append(f"{n_malignant} malignant")
        if n_benign is not None:
            parts.append(f"{n_benign} benign")
        return (f"small sample ({', '.join(parts)}; below {self.min_images} images or {self.min_positives} "
                f"of a class)")


DEFAULT_RULE = SmallSampleRule()
