"""Bounds on the numbers a user gives a run (seeds, bootstrap replicates), checked at the config
and command-line edges so that a cell never fails late, or runs as another seed, on a value no
library accepts."""

from __future__ import annotations

from typing import Any

from ..errors import quote

#: Seeds are whole numbers in 0..SEED_MAX: the range numpy's ``RandomState``, scikit-learn's
#: ``random_state`` and ``torch.manual_seed`` all accept (checked at the config and command-line edges).
SEED_MAX = 2**32 - 1
#: Most bootstrap replicates a cell or ``score`` computes (the study's default is 1000; 100,000 on a
#: large test set already takes minutes, and each replicate keeps one value per metric).
N_BOOT_MAX = 100_000


def seed_problem(value: Any) -> str:
    """Why ``value`` is not a usable seed (``""`` when it is): not a whole number (a bool, a float
    such as ``1e20``, text) or outside 0..:data:`SEED_MAX`."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"a seed is a whole number in 0..{SEED_MAX}, got {quote(value)}"
    if not 0 <= value <= SEED_MAX:
        return f"a seed must lie in 0..{SEED_MAX} (numpy's range), got {value}"
    return ""
