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


def _balanced_weights(y: np.ndarray) -> dict[int, float]:
    classes, counts = np.unique(y, return_counts=True)
    return {int(c): float(len(y) / (len(classes) * n)) for c, n in zip(classes, counts)}


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

    def record(self) -> dict[str, Any]:
        out = {"head": self.head, "chosen": self.params, "selection_metric": self.metric,
               "validation_score": self.validation_score, "grid": self.trials,
               "fit_seconds": round(self.fit_seconds, 3)}
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


def select_head(name: str, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
                class_weight: str = "balanced", seed: int = 0, metric: str = "auroc",
                grid: dict[str, list[Any]] | None = None, options: dict[str, Any] | None = None) -> Selection:
    """Fit every grid point on train, keep the best on validation (see the module docstring)."""
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, got {class_weight!r}")
    y_train = np.asarray(y_train).astype(int)
    y_val = np.asarray(y_val).astype(int)
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"the training set of head {name!r} has only class {np.unique(y_train).tolist()}; "
                         f"a probe needs benign and malignant training images (raise the label fraction)")
    spec = get_head(name)
    options = dict(options or {})
    best: tuple[float, int, Any, dict[str, Any]] | None = None
    trials = []
    t0 = time.perf_counter()
    for order, params in enumerate(spec.grid_points(grid)):
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
                     metric=metric, trials=trials, fit_seconds=time.perf_counter() - t0)
