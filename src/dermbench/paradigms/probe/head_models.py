"""The probe heads: build, fit, select on validation, predict ``p_malignant``.

Every head is a :class:`HeadSpec` with a small **declared grid**. :func:`select_head` fits one
model per grid point on the training embeddings, scores each on the validation split (AUROC by
default; ties broken by the grid's order, which lists the study's default first) and returns the
best fitted model — the one then **used** for test — with the chosen values and every grid
point's validation score for the run record. The validation split is never trained on: it also
sets the operating threshold later.

Class imbalance (``class_weight="balanced"`` or ``"none"``) is handled per head the way the head
supports it: ``class_weight`` for scikit-learn models, ``scale_pos_weight`` for XGBoost, a
positive-class weight in the MLP's loss. kNN has no weighting; balance its training set with the
``balance`` options instead.
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

CLASS_WEIGHTS = ("balanced", "none")


@dataclass(frozen=True)
class HeadSpec:
    name: str
    grid: dict[str, list[Any]]
    build: Callable[..., Any]  # (params, *, class_weight, seed, y_train, options) -> model with fit/predict_proba
    imbalance: str
    standardise: bool = True

    def grid_points(self, override: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
        grid = dict(self.grid)
        if override:
            unknown = set(override) - set(grid)
            if unknown:
                raise ValueError(f"head {self.name!r} has no hyperparameter(s) {sorted(unknown)}; "
                                 f"its grid is {sorted(grid)}")
            grid.update({k: list(v) for k, v in override.items()})
        keys = list(grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


class SklearnHead:
    """A scikit-learn estimator (optionally after standardisation) with ``p_malignant`` output."""

    def __init__(self, estimator: Any, standardise: bool, sample_weight: bool = False):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), estimator) if standardise else estimator
        self.sample_weight = sample_weight
        self.info: dict[str, Any] = {}

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> "SklearnHead":
        if sample_weight is not None and self.sample_weight:
            last = self.model.steps[-1][0] if hasattr(self.model, "steps") else None
            key = f"{last}__sample_weight" if last else "sample_weight"
            self.model.fit(X, y, **{key: sample_weight})
        else:
            self.model.fit(X, y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        final = self.model.steps[-1][1] if hasattr(self.model, "steps") else self.model
        if hasattr(final, "estimators_") and getattr(final, "n_jobs", None) not in (None, 1):
            # A forest predicting on several threads sums its trees' votes in the order the
            # threads finish: the last digits then differ between identical runs. Fit in
            # parallel, predict on one thread.
            final.set_params(n_jobs=1)
        proba = self.model.predict_proba(X)
        classes = list(self.model.classes_)
        return proba[:, classes.index(1)] if 1 in classes else np.zeros(len(X))


def _cw(class_weight: str, y: np.ndarray) -> Any:
    return "balanced" if class_weight == "balanced" else None


def _logreg(params: dict, *, class_weight: str, seed: int, y_train: np.ndarray, options: dict) -> SklearnHead:
    from sklearn.linear_model import LogisticRegression

    return SklearnHead(LogisticRegression(C=float(params["C"]), max_iter=5000, class_weight=_cw(class_weight, y_train),
                                          random_state=seed), standardise=True)


def _svm(params: dict, *, class_weight: str, seed: int, y_train: np.ndarray, options: dict) -> SklearnHead:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    # Platt scaling (sigmoid on the SVM's decision values, fitted by internal CV) — what
    # SVC(probability=True) did, written the way scikit-learn >= 1.9 asks for it.
    svc = SVC(C=float(params["C"]), kernel="rbf", gamma="scale", class_weight=_cw(class_weight, y_train),
              random_state=seed)
    folds = int(max(2, min(5, np.bincount(y_train).min())))
    return SklearnHead(CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False), standardise=True)


def _rf(params: dict, *, class_weight: str, seed: int, y_train: np.ndarray, options: dict) -> SklearnHead:
    from sklearn.ensemble import RandomForestClassifier

    return SklearnHead(RandomForestClassifier(
        n_estimators=int(options.get("rf_trees", 500)), min_samples_leaf=int(params["min_samples_leaf"]),
        class_weight="balanced_subsample" if class_weight == "balanced" else None,
        n_jobs=int(options.get("n_jobs", -1)), random_state=seed), standardise=False)


def _knn(params: dict, *, class_weight: str, seed: int, y_train: np.ndarray, options: dict) -> SklearnHead:
    from sklearn.neighbors import KNeighborsClassifier

    k = max(1, min(int(params["k"]), len(y_train)))
    return SklearnHead(KNeighborsClassifier(n_neighbors=k, weights="distance", metric="cosine"), standardise=True)


def _hgb(params: dict, *, class_weight: str, seed: int, y_train: np.ndarray, options: dict) -> SklearnHead:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return SklearnHead(HistGradientBoostingClassifier(
        learning_rate=float(params["learning_rate"]), max_iter=int(options.get("hgb_iterations", 200)),
        class_weight=_cw(class_weight, y_train), early_stopping=False, random_state=seed), standardise=False)


def _xgboost(params: dict, *, class_weight: str, seed: int, y_train: np.ndarray, options: dict) -> SklearnHead:
    try:
        from xgboost import XGBClassifier
    except ImportError as exc:
        raise ImportError("the xgboost head needs the xgboost package: pip install 'dermbench[xgboost]' "
                          "(or pip install xgboost-cpu)") from exc
    pos = max(int((y_train == 1).sum()), 1)
    neg = max(int((y_train == 0).sum()), 1)
    return SklearnHead(XGBClassifier(
        n_estimators=int(options.get("xgb_trees", 300)), max_depth=int(params["max_depth"]), learning_rate=0.1,
        scale_pos_weight=neg / pos if class_weight == "balanced" else 1.0, n_jobs=int(options.get("n_jobs", 0)) or None,
        random_state=seed, tree_method="hist", eval_metric="logloss", verbosity=0), standardise=False)


class MLPHead:
    """PyTorch MLP ``D -> 512 -> 256 -> 1`` (ReLU, dropout 0.3) on standardised embeddings.

    AdamW, mini-batches, at most ``max_epochs``; after every epoch the validation loss is
    measured and training stops when it has not improved for ``patience`` epochs; the weights of
    the best epoch are restored before prediction (``info["best_epoch"]`` records which).
    """

    def __init__(self, params: dict, *, class_weight: str, seed: int, options: dict):
        self.lr = float(params["lr"])
        self.weight_decay = float(params.get("weight_decay", 1e-4))
        self.hidden = tuple(options.get("mlp_hidden", (512, 256)))
        self.dropout = float(options.get("mlp_dropout", 0.3))
        self.max_epochs = int(options.get("mlp_max_epochs", 200))
        self.patience = int(options.get("mlp_patience", 10))
        self.batch_size = int(options.get("mlp_batch_size", 64))
        self.class_weight = class_weight
        self.seed = seed
        self.info: dict[str, Any] = {}

    def _net(self, dim: int) -> Any:
        import torch.nn as nn

        layers: list[Any] = []
        prev = dim
        for width in self.hidden:
            layers += [nn.Linear(prev, width), nn.ReLU(), nn.Dropout(self.dropout)]
            prev = width
        layers.append(nn.Linear(prev, 1))
        return nn.Sequential(*layers)

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, sample_weight: np.ndarray | None = None) -> "MLPHead":
        import torch

        if X_val is None or y_val is None or len(y_val) == 0:
            raise ValueError("the MLP head needs validation embeddings for early stopping")
        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        self.mean = X.mean(0, keepdims=True)
        self.scale = X.std(0, keepdims=True) + 1e-6
        xt = torch.as_tensor((X - self.mean) / self.scale, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        xv = torch.as_tensor((X_val - self.mean) / self.scale, dtype=torch.float32)
        yv = torch.as_tensor(y_val, dtype=torch.float32)
        pos = max(float((y == 1).sum()), 1.0)
        neg = max(float((y == 0).sum()), 1.0)
        pos_weight = torch.tensor([neg / pos if self.class_weight == "balanced" else 1.0])
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.net = self._net(X.shape[1])
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best_loss, best_state, best_epoch, stale = float("inf"), None, 0, 0
        history = []
        for epoch in range(1, self.max_epochs + 1):
            self.net.train()
            order = torch.randperm(len(yt), generator=g)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                opt.zero_grad()
                loss = loss_fn(self.net(xt[idx]).squeeze(1), yt[idx])
                loss.backward()
                opt.step()
            self.net.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(self.net(xv).squeeze(1), yv))
            history.append(round(val_loss, 6))
            if val_loss < best_loss - 1e-6:
                best_loss, best_epoch, stale = val_loss, epoch, 0
                best_state = copy.deepcopy(self.net.state_dict())
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.info = {"best_epoch": best_epoch, "epochs_run": len(history), "best_val_loss": round(best_loss, 6),
                     "max_epochs": self.max_epochs, "patience": self.patience, "val_loss_history": history}
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        import torch

        self.net.eval()
        with torch.no_grad():
            logits = self.net(torch.as_tensor((X - self.mean) / self.scale, dtype=torch.float32)).squeeze(1)
        return torch.sigmoid(logits).numpy().astype(np.float64)


def _mlp(params: dict, *, class_weight: str, seed: int, y_train: np.ndarray, options: dict) -> MLPHead:
    return MLPHead(params, class_weight=class_weight, seed=seed, options=options)


LOGREG = HeadSpec("logreg", {"C": [1.0, 0.1, 0.01, 0.001, 10.0]}, _logreg, "class_weight")
SVM = HeadSpec("svm", {"C": [1.0, 0.1, 10.0]}, _svm, "class_weight")
RF = HeadSpec("rf", {"min_samples_leaf": [1, 3]}, _rf, "class_weight=balanced_subsample", standardise=False)
KNN = HeadSpec("knn", {"k": [15, 5, 31]}, _knn, "none (balance the training set instead)")
HGB = HeadSpec("hgb", {"learning_rate": [0.1, 0.05]}, _hgb, "class_weight", standardise=False)
XGBOOST = HeadSpec("xgboost", {"max_depth": [6, 3]}, _xgboost, "scale_pos_weight", standardise=False)
MLP = HeadSpec("mlp", {"lr": [1e-3, 3e-4]}, _mlp, "pos_weight")


@dataclass
class Selection:
    """The head chosen on validation: the fitted model used for test, and what was tried."""

    head: str
    model: Any
    params: dict[str, Any]
    validation_score: float
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    fit_seconds: float = 0.0

    #: how the grid point was chosen: {"method": "validation" | "cv", "reason", "folds", "grouped", ...}
    selection: dict[str, Any] = field(default_factory=lambda: {"method": "validation"})
    #: chosen values at the edge of their grid (see :func:`grid_edges`)
    grid_edge: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        out = {"head": self.head, "chosen": self.params, "selection_metric": self.metric,
               "validation_score": self.validation_score, "grid": self.trials,
               "fit_seconds": round(self.fit_seconds, 3), "selection": self.selection, "grid_edge": self.grid_edge}
        info = getattr(self.model, "info", None)
        if info:
            out["training"] = info
        return out


def get_head(name: str) -> HeadSpec:
    from .heads import HEADS

    return HEADS.get(name)


def _score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    if metric == "auroc":
        return float(roc_auc_score(y, p))
    if metric == "auprc":
        return float(average_precision_score(y, p))
    if metric == "neg_log_loss":
        return -float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))
    raise ValueError(f"unknown selection metric {metric!r}; use auroc, auprc or neg_log_loss")


#: below either, the validation split is too small to choose hyperparameters on: grouped
#: cross-validation on train + validation chooses them (head_options cv_min_validation_images /
#: cv_min_validation_positives change the thresholds; 0 and 0 keep validation selection always)
CV_MIN_VALIDATION_IMAGES = 50
CV_MIN_VALIDATION_POSITIVES = 10
CV_FOLDS = 5


def grid_edges(grid: dict[str, list[Any]], chosen: dict[str, Any]) -> list[dict[str, Any]]:
    """The chosen values that sit at the lowest or highest value of their grid, for numeric
    hyperparameters whose grid has three or more values (with two values every choice is an edge,
    and with one there is no choice). The optimum may lie outside the grid: the record says so."""
    edges = []
    for param, values in grid.items():
        numbers = sorted({float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if len(numbers) < 3 or param not in chosen or isinstance(chosen[param], bool):
            continue
        try:
            value = float(chosen[param])
        except (TypeError, ValueError):
            continue
        if value in (numbers[0], numbers[-1]):
            edges.append({"param": param, "value": chosen[param],
                          "edge": "lowest" if value == numbers[0] else "highest",
                          "grid": f"{numbers[0]:g}..{numbers[-1]:g} ({len(numbers)} values)"})
    return edges


def _needs_cv(y_val: np.ndarray, options: dict[str, Any]) -> str:
    """Why the validation split is too small to select on ("" when it is not)."""
    min_images = int(options.get("cv_min_validation_images", CV_MIN_VALIDATION_IMAGES))
    min_pos = int(options.get("cv_min_validation_positives", CV_MIN_VALIDATION_POSITIVES))
    n, pos = len(y_val), int(np.sum(y_val == 1))
    if n < min_images or pos < min_pos:
        return (f"validation has {n} images, {pos} malignant: below {min_images} images or {min_pos} malignant "
                f"ones, too few to choose hyperparameters on")
    return ""


def _cv_scores(spec: HeadSpec, points: list[dict[str, Any]], X: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
               *, class_weight: str, seed: int, metric: str, options: dict[str, Any]) -> tuple[list[float], dict]:
    """Out-of-fold score of every grid point (one score over all out-of-fold predictions, which is
    steadier than a mean of per-fold scores on folds of a few images) and the CV's description."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    counts = np.bincount(y, minlength=2)
    folds = int(min(CV_FOLDS, counts.min()))
    if groups is not None:
        n_groups = len(np.unique(groups))
        folds = min(folds, n_groups)
        splitter: Any = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = list(splitter.split(X, y, groups))
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = list(splitter.split(X, y))
    scores = []
    for params in points:
        oof = np.full(len(y), np.nan)
        for train_idx, test_idx in splits:
            y_fit = y[train_idx]
            if len(np.unique(y_fit)) < 2:
                continue
            model = spec.build(params, class_weight=class_weight, seed=seed, y_train=y_fit, options=options)
            model.fit(X[train_idx], y_fit, X[test_idx], y[test_idx])
            oof[test_idx] = model.predict_proba(X[test_idx])
        done = ~np.isnan(oof)
        scores.append(_score(metric, y[done], oof[done]) if done.sum() else float("nan"))
    return scores, {"folds": folds, "grouped": groups is not None, "images": int(len(y)),
                    "malignant": int(counts[1]), "scoring": f"{metric} of the out-of-fold predictions"}


def select_head(name: str, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
                class_weight: str = "balanced", seed: int = 0, metric: str = "auroc",
                grid: dict[str, list[Any]] | None = None, options: dict[str, Any] | None = None,
                cv_pool: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None) -> Selection:
    """Fit every grid point on train, keep the best on validation (see the module docstring).

    When the validation split is tiny (fewer than :data:`CV_MIN_VALIDATION_IMAGES` images or
    :data:`CV_MIN_VALIDATION_POSITIVES` malignant ones) the best on it is mostly chance and often
    a grid edge; then the grid point is chosen by grouped cross-validation
    (``StratifiedGroupKFold``, at most :data:`CV_FOLDS` folds, patients/lesions kept in one fold)
    on ``cv_pool`` — ``(X, y, group keys)`` of train + validation, as the probe cell passes them:
    the training images of the label fraction, unaugmented and unbalanced — or on the plain
    concatenation of train and validation when no pool is given. The chosen point is then fitted
    on the training set as configured (validation stays out of training: it sets the threshold).
    ``Selection.selection`` records which way was taken and why; ``grid_edge`` any chosen value at
    the edge of its grid."""
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, got {class_weight!r}")
    y_train = np.asarray(y_train).astype(int)
    y_val = np.asarray(y_val).astype(int)
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"the training set of head {name!r} has only class {np.unique(y_train).tolist()}; "
                         f"a probe needs benign and malignant training images (raise the label fraction)")
    spec = get_head(name)
    options = dict(options or {})
    points = spec.grid_points(grid)
    full_grid = dict(spec.grid)
    full_grid.update({k: list(v) for k, v in (grid or {}).items()})
    t0 = time.perf_counter()
    why = _needs_cv(y_val, options) if len(points) > 1 else ""
    if why:
        if cv_pool is None:
            cv_pool = (np.concatenate([X_train, X_val]), np.concatenate([y_train, y_val]), None)
        X_cv, y_cv, groups = cv_pool
        y_cv = np.asarray(y_cv).astype(int)
        if np.bincount(y_cv, minlength=2).min() < 2 or (groups is not None and len(np.unique(groups)) < 2):
            why = ""  # too few images of a class (or groups) even for 2 folds: validation it is
    if why:
        scores, cv_record = _cv_scores(spec, points, np.asarray(X_cv), y_cv, None if groups is None else
                                       np.asarray(groups), class_weight=class_weight, seed=seed, metric=metric,
                                       options=options)
        keys = [-np.inf if np.isnan(sc) else sc for sc in scores]
        order = int(np.argmax(keys))  # first of equal scores: the grid lists the study's default first
        trials = [{"params": p, f"cv_{metric}": None if np.isnan(sc) else round(sc, 6)} for p, sc in zip(points, scores)]
        params = points[order]
        model = spec.build(params, class_weight=class_weight, seed=seed, y_train=y_train, options=options)
        model.fit(X_train, y_train, X_val, y_val)
        val_score = _score(metric, y_val, model.predict_proba(X_val)) if len(y_val) else float("nan")
        return Selection(head=name, model=model, params=params,
                         validation_score=None if np.isnan(val_score) else float(val_score),  # type: ignore[arg-type]
                         metric=metric, trials=trials, fit_seconds=time.perf_counter() - t0,
                         selection={"method": "cv", "reason": why, **cv_record,
                                    "cv_score": None if not np.isfinite(keys[order]) else float(keys[order]),
                                    "refit_on": "the training set as configured (validation only for the threshold)"},
                         grid_edge=grid_edges(full_grid, params))
    best: tuple[float, int, Any, dict[str, Any]] | None = None
    trials = []
    for order, params in enumerate(points):
        model = spec.build(params, class_weight=class_weight, seed=seed, y_train=y_train, options=options)
        model.fit(X_train, y_train, X_val, y_val)
        score = _score(metric, y_val, model.predict_proba(X_val)) if len(y_val) else float("nan")
        trials.append({"params": params, metric: None if np.isnan(score) else round(score, 6)})
        key = -np.inf if np.isnan(score) else score
        if best is None or key > best[0]:
            best = (key, order, model, params)
    assert best is not None
    return Selection(head=name, model=best[2], params=best[3],
                     validation_score=None if not np.isfinite(best[0]) else float(best[0]),  # type: ignore[arg-type]
                     metric=metric, trials=trials, fit_seconds=time.perf_counter() - t0,
                     selection={"method": "validation", "images": int(len(y_val)), "malignant": int(y_val.sum())},
                     grid_edge=grid_edges(full_grid, best[3]))
