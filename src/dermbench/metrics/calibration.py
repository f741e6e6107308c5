"""Post-hoc calibration of ``p_malignant``: fitted on a validation split, applied unchanged elsewhere.

Pure functions of labels ``y`` (1 = malignant) and scores ``p``. Three methods:

- ``temperature``: ``sigmoid(logit(p) / T)`` with one ``T > 0`` chosen by maximum likelihood
  (Guo et al. 2017). It rescales confidence without reordering images, so AUROC is unchanged.
- ``platt``: ``sigmoid(a * logit(p) + b)`` by maximum likelihood (Platt 1999, on the model's own
  logit). Also order-preserving when ``a > 0``; it can shift the base rate as well as the spread.
- ``isotonic``: the monotone step function of scikit-learn's ``IsotonicRegression`` (linear between
  its thresholds, clipped outside). It can merge scores into ties, so AUROC may change slightly.

A fitted :class:`Calibrator` is plain numbers (``as_record``/``from_record``): the run record keeps
it in ``metrics.json``, and a transfer evaluation or ``dermbench predict`` applies exactly the
calibrator of the cell, never one refitted on the images being scored.

The logit of a score is taken after clipping ``p`` to the smallest positive float and the largest
float below 1, so a model that outputs exact 0 or 1 has a finite logit and no two distinct scores
(however saturated: an over-confident head gives 1e-38) are merged into one. Temperature and Platt
are *fitted* on logits clipped to +-36.7 (what a score near 1 can express; :data:`FIT_LOGIT_MAX`),
so one underflowed score cannot decide the fit; Platt's slope is kept >= 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._inputs import as_labels_scores
from .names import DEFAULT_ECE_BINS

CALIBRATION_METHODS = ("none", "temperature", "platt", "isotonic")
#: scores are clipped to [LOW, HIGH] before their logit is taken (see the module docstring)
LOW = float(np.finfo(np.float64).tiny)
HIGH = float(np.nextafter(1.0, 0.0))


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), LOW, HIGH)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration map ``p -> p'`` (see the module docstring for the methods).

    ``params``: ``{"temperature": T}``, ``{"slope": a, "intercept": b}``, or for isotonic
    ``{"x": [...], "y": [...]}`` (the fitted thresholds, increasing in x). ``n_fit`` /
    ``n_fit_malignant`` say how many validation images it was fitted on."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    n_fit: int = 0
    n_fit_malignant: int = 0

    def apply(self, p: Any) -> np.ndarray:
        """Calibrated scores of ``p`` (values in [0, 1])."""
        p = np.asarray(p, dtype=np.float64)
        if self.method == "none":
            return p.copy()
        if self.method == "temperature":
            return sigmoid(logit(p) / float(self.params["temperature"]))
        if self.method == "platt":
            return sigmoid(float(self.params["slope"]) * logit(p) + float(self.params["intercept"]))
        if self.method == "isotonic":
            x = np.asarray(self.params["x"], dtype=np.float64)
            y = np.asarray(self.params["y"], dtype=np.float64)
            return np.clip(np.interp(p, x, y), 0.0, 1.0)  # clipped outside [x0, xn], as out_of_bounds="clip"
        raise ValueError(f"unknown calibration method {self.method!r}; use one of {', '.join(CALIBRATION_METHODS)}")

    def as_record(self) -> dict[str, Any]:
        return {"method": self.method, "params": dict(self.params), "n_fit": int(self.n_fit),
                "n_fit_malignant": int(self.n_fit_malignant)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Calibrator":
        """The calibrator a run record stored (:meth:`as_record`); a ValueError names what is missing."""
        method = str(record.get("method", ""))
        params = dict(record.get("params") or {})
        needed = {"none": (), "temperature": ("temperature",), "platt": ("slope", "intercept"),
                  "isotonic": ("x", "y")}.get(method)
        if needed is None:
            raise ValueError(f"the recorded calibration method {method!r} is unknown; "
                             f"known: {', '.join(CALIBRATION_METHODS)}")
        missing = [k for k in needed if k not in params]
        if missing:
            raise ValueError(f"the recorded {method} calibration lacks {missing}")
        return cls(method, params, int(record.get("n_fit", 0)), int(record.get("n_fit_malignant", 0)))


def fit_calibrator(method: str, y: Any, p: Any) -> Calibrator:
    """Fit ``method`` on validation labels ``y`` and scores ``p``.

    A ValueError when the method is unknown or the validation scores cannot fit it (one class
    only: there is nothing to calibrate against)."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}")
    labels, scores = as_labels_scores(y, p)
    n, n_pos = int(labels.size), int(labels.sum())
    if method == "none":
        return Calibrator("none", {}, n, n_pos)
    if n_pos == 0 or n_pos == n:
        raise ValueError(f"{method} calibration needs benign and malignant validation images; "
                         f"the validation split has {n_pos} malignant of {n}")
    if method == "temperature":
        params = {"temperature": _fit_temperature(labels, scores)}
    elif method == "platt":
        slope, intercept = _fit_platt(labels, scores)
        params = {"slope": slope, "intercept": intercept}
    else:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(scores, labels)
        params = {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}
    return Calibrator(method, params, n, n_pos)


#: Logits are clipped to +-FIT_LOGIT_MAX while a map is *fitted* (and used unclipped when it is applied,
#: so no two distinct scores merge). A float64 probability near 1 cannot say more than logit(HIGH)
#: (about 36.7), while one near 0 can say -708 (an exact 0 from an underflowed sigmoid): unclipped,
#: one malignant image with an exact 0 outweighed everything else, and temperature ran to its bound
#: (all scores near 0.5) or Platt's slope turned negative (the ranking reversed).
FIT_LOGIT_MAX = float(np.log(HIGH) - np.log1p(-HIGH))


def _fit_logit(p: np.ndarray) -> np.ndarray:
    return np.clip(logit(p), -FIT_LOGIT_MAX, FIT_LOGIT_MAX)


def _nll(y: np.ndarray, z: np.ndarray) -> float:
    """Mean negative log-likelihood of labels ``y`` under logits ``z`` (stable form)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    z = _fit_logit(p)
    # optimise log T so T stays positive; T in [e^-6, e^6] covers any useful rescaling
    res = minimize_scalar(lambda log_t: _nll(y, z / math.exp(log_t)), bounds=(-6.0, 6.0), method="bounded",
                          options={"xatol": 1e-8})
    return float(math.exp(res.x))


def _fit_platt(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    from scipy.optimize import minimize

    z = _fit_logit(p)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = theta
        s = a * z + b
        q = sigmoid(s)
        grad = np.array([np.mean((q - y) * z), np.mean(q - y)])
        return _nll(y, s), grad

    # slope >= 0: a calibration map never reverses the model's ranking
    res = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(0.0, None), (None, None)])
    return float(res.x[0]), float(res.x[1])


def reliability_table(y: Any, p: Any, bins: int = DEFAULT_ECE_BINS) -> list[dict[str, Any]]:
    """Per non-empty bin of ``p`` (the ECE's equal-width bins [k/B, (k+1)/B), p = 1 in the last):
    ``{"bin", "low", "high", "n", "mean_p", "observed"}`` — what a reliability diagram draws."""
    labels, scores = as_labels_scores(y, p)
    idx = np.minimum(np.floor(scores * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            rows.append({"bin": b, "low": b / bins, "high": (b + 1) / bins, "n": int(mask.sum()),
                         "mean_p": float(scores[mask].mean()), "observed": float(labels[mask].mean())})
    return rows


def calibration_change(y: Any, p_before: Any, p_after: Any, bins: int = DEFAULT_ECE_BINS) -> dict[str, float]:
    """ECE and Brier score of the same images before and after calibration."""
    from .ranking import threshold_free

    before = threshold_free(y, p_before, ece_bins=bins)
    after = threshold_free(y, p_after, ece_bins=bins)
    return {"ece_before": float(before["ece"]), "ece_after": float(after["ece"]),
            "brier_before": float(before["brier"]), "brier_after": float(after["brier"])}
