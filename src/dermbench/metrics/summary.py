"""Summaries across training seeds."""

from __future__ import annotations

import math

import numpy as np


def multi_seed_summary(values) -> dict:
    """``{"mean", "sd", "n"}`` of one metric over seeds; sd uses ddof=1 (None when n < 2).

    None/NaN entries (the metric was undefined for that seed) are left out and ``n`` counts only
    the values used; with none left, mean and sd are None and n is 0.
    """
    kept = [float(v) for v in np.asarray(values, dtype=object).ravel()
            if v is not None and not (isinstance(v, (float, np.floating)) and math.isnan(v))]
    n = len(kept)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0}
    array = np.asarray(kept, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "sd": float(array.std(ddof=1)) if n > 1 else None,
        "n": n,
    }
