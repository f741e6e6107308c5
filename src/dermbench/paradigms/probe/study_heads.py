"""The study's probe heads: its fixed defaults (``head_preset: study``) and its optional Optuna
search (``head_preset: study_hpo``), as STUDY.md §2.4, §5.2 and §5.3 describe them.

``study`` — one model per head with the study's ``models_config`` defaults, fitted on the training
embeddings only (no grid, no validation-based choice; the validation split still sets
dermbench's operating threshold later). ``random_state`` is the cell's seed (the study's 42 is
dermbench's default seed):

* ``rf``: RandomForest, 100 trees, gini, no depth limit, min_samples_split 2, min_samples_leaf 1,
  max_features sqrt, class_weight balanced_subsample, all cores; raw (unscaled) embeddings.
* ``xgboost``: binary:logistic, eval_metric auc, 300 trees, depth 6, learning rate 0.1, subsample
  0.8, colsample_bytree 0.8, scale_pos_weight 1 (no class weighting), all cores; raw embeddings.
* ``svm``: RBF, C 1, gamma scale, class_weight balanced, Platt probabilities, **no feature
  scaling**. ``SVC(probability=True)`` as the study built it while scikit-learn has it (deprecated
  in 1.9, its FutureWarning silenced here); after its removal, the documented replacement
  ``CalibratedClassifierCV(SVC(), ensemble=False)`` (the record says which).
* ``mlp``: :class:`StudyMLPHead`, the study's ``MLPClassifier`` trained by its ``MLPTrainer``.

The study's hard decisions are kept per image (``study_pred``): each estimator's own
``predict`` (SVC decides by the sign of its decision function, which can disagree with its Platt
probability at 0.5), and ``softmax[:, 1] > 0.5`` for the MLP.

``study_hpo`` — the study's search (not fed back into its training runs; its published HPO
numbers are on the validation split):

* ``rf``/``xgboost``/``svm``: Optuna ``TPESampler(seed)``, maximise, ``trials`` (10); objective =
  mean ``cross_val_score`` macro-F1 over ``StratifiedKFold(5, shuffle=True, random_state=seed)`` on
  the **training** embeddings; the search space of its ``models_config.yaml`` suggested in its order
  and merged over the defaults; the best parameters refitted on train.
* ``mlp``: the study's dynamic-MLP search (``dl_search.py``, 7f83 version): depth 0-3, units
  {128, 256, 512, 1024}, constant or pyramid widths, relu/gelu/leaky_relu(0.1), optional batch
  norm and dropout, lr 1e-5..1e-2 (log), adam or adamw, optional weight decay 1e-8..1e-3 (log);
  each trial trains with label smoothing 0.1, ReduceLROnPlateau (patience 3, factor 0.5), early
  stopping patience 10 with min_delta 1e-4 **restoring the best epoch**; objective = macro-F1 at
  P > 0.5 on the **validation** split (the split it also stops on); the best configuration is then
  trained again. Its data loader applied "SMOTE-lite" to train (random pairs of minority rows
  interpolated until the classes are even, seed 42), which the study's production training did
  not; that is reproduced here (:func:`smote_lite`).

``optuna`` is needed only here: ``pip install 'dermbench[hpo]'``; a clear error names it otherwise.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any, Callable

import numpy as np

from .head_models import SklearnHead

#: The heads the study had (its ``random_forest``, ``xgboost``, ``svm``, ``mlp``/``dynamic_mlp``), by our names.
STUDY_HEADS = ("rf", "xgboost", "svm", "mlp")

RF_DEFAULTS = dict(n_estimators=100, criterion="gini", max_depth=None, min_samples_split=2, min_samples_leaf=1,
                   max_features="sqrt", class_weight="balanced_subsample", n_jobs=-1)
XGB_DEFAULTS = dict(objective="binary:logistic", eval_metric="auc", n_estimators=300, max_depth=6, learning_rate=0.1,
                    subsample=0.8, colsample_bytree=0.8, scale_pos_weight=1.0, n_jobs=-1)
SVM_DEFAULTS = dict(kernel="rbf", C=1.0, gamma="scale", class_weight="balanced")
IMBALANCE = {"rf": "class_weight=balanced_subsample (the study's)", "xgboost": "none (the study's scale_pos_weight 1)",
             "svm": "class_weight=balanced (the study's)", "mlp": "none (the study's MLP)"}


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise ImportError("head_preset study_hpo runs the study's Optuna search and needs optuna: "
                          "pip install 'dermbench[hpo]' (or pip install optuna)") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --------------------------------------------------------------------------------------------
# Classical heads
# --------------------------------------------------------------------------------------------
def _svc(params: dict[str, Any], seed: int) -> tuple[Any, str]:
    """The study's SVC with Platt probabilities; see the module docstring."""
    from sklearn.svm import SVC

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return SVC(probability=True, random_state=seed, **params), "SVC(probability=True)"
    except TypeError:  # scikit-learn >= 1.11: the parameter is gone
        from sklearn.calibration import CalibratedClassifierCV

        return (CalibratedClassifierCV(SVC(random_state=seed, **params), method="sigmoid", ensemble=False),
                "CalibratedClassifierCV(SVC(), ensemble=False)")


def study_estimator(head: str, params: dict[str, Any] | None = None, *, seed: int = 42) -> tuple[Any, dict[str, Any]]:
    """(unfitted estimator, the parameters it was built with) of a classical study head:
    the study's defaults updated by ``params`` (a search point)."""
    params = dict(params or {})
    if head == "rf":
        from sklearn.ensemble import RandomForestClassifier

        merged = {**RF_DEFAULTS, **params}
        return RandomForestClassifier(random_state=seed, **merged), merged
    if head == "xgboost":
        try:
            from xgboost import XGBClassifier
        except ImportError as exc:
            raise ImportError("the xgboost head needs the xgboost package: pip install 'dermbench[xgboost]'") from exc
        merged = {**XGB_DEFAULTS, **params}
        return XGBClassifier(random_state=seed, verbosity=0, **merged), merged
    if head == "svm":
        merged = {**SVM_DEFAULTS, **params}
        estimator, built = _svc(merged, seed)
        return estimator, {**merged, "probabilities": built}
    raise ValueError(f"head {head!r} has no study estimator; the study's heads are {', '.join(STUDY_HEADS)}")


class StudyHead(SklearnHead):
    """A fitted classical study head: ``p_malignant`` from ``predict_proba`` and the study's own
    hard decision from ``predict``. The estimator sees the embeddings as they are (no scaling); as
    a :class:`SklearnHead` it is saved and loaded like dermbench's scikit-learn heads."""

    def __init__(self, estimator: Any, params: dict[str, Any]):
        super().__init__(estimator, standardise=False)
        self.params = params

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            sample_weight: np.ndarray | None = None) -> "StudyHead":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.model.fit(X, y)
        return self

    def study_predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(X)).astype(int)


# The study's search spaces (its models_config.yaml), in the order it suggested them.
def _suggest_rf(trial: Any) -> dict[str, Any]:
    return {"n_estimators": trial.suggest_int("n_estimators", 100, 800, step=100),
            "max_depth": trial.suggest_int("max_depth", 3, 20),
            "min_samples_split": trial.suggest_int("min_samples_split", 2, 10),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 5),
            "max_features": trial.suggest_categorical("max_features", ["sqrt", "log2", None]),
            "criterion": trial.suggest_categorical("criterion", ["gini", "entropy"])}


def _suggest_xgboost(trial: Any) -> dict[str, Any]:
    return {"n_estimators": trial.suggest_int("n_estimators", 100, 1000, step=100),
            "max_depth": trial.suggest_int("max_depth", 3, 10),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "subsample": trial.suggest_float("subsample", 0.6, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.6, 1.0)}


def _suggest_svm(trial: Any) -> dict[str, Any]:
    return {"C": trial.suggest_float("C", 0.1, 10.0, log=True),
            "gamma": trial.suggest_categorical("gamma", ["scale", "auto"]),
            "kernel": trial.suggest_categorical("kernel", ["rbf", "poly", "sigmoid"])}


SEARCH_SPACES: dict[str, Callable[[Any], dict[str, Any]]] = {"rf": _suggest_rf, "xgboost": _suggest_xgboost,
                                                             "svm": _suggest_svm}


def search_classical(head: str, X: np.ndarray, y: np.ndarray, *, seed: int = 42, trials: int = 10,
                     folds: int = 5) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    """The study's ML search on the training set: (best parameters, best CV macro-F1, trials)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    optuna = _optuna()
    folds = int(min(folds, np.bincount(np.asarray(y, dtype=int)).min()))
    if folds < 2:
        raise ValueError(f"the study's {head} search runs {folds}-fold cross-validation on train: it needs at "
                         f"least 2 training images per class")

    def objective(trial: Any) -> float:
        estimator, _ = study_estimator(head, SEARCH_SPACES[head](trial), seed=seed)
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            scores = cross_val_score(estimator, X, y, cv=cv, scoring="f1_macro", n_jobs=-1)
        return float(np.mean(scores))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=int(trials))
    history = [{"params": t.params, "cv_macro_f1": None if t.value is None else round(float(t.value), 6)}
               for t in study.trials]
    return dict(study.best_params), float(study.best_value), history


# --------------------------------------------------------------------------------------------
# MLP heads
# --------------------------------------------------------------------------------------------
def _batches(n: int, batch_size: int, generator: Any = None) -> list[Any]:
    """Index batches of one epoch (shuffled with ``generator``); a last batch of one row is left
    out, since batch norm cannot train on it (the study's loader would have raised there)."""
    import torch

    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    parts = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if generator is not None and len(parts) > 1 and len(parts[-1]) == 1:
        parts = parts[:-1]
    return parts


def _train_one_epoch(net: Any, optimizer: Any, criterion: Any, X: Any, y: Any, batch_size: int, generator: Any) -> None:
    """One pass over the training rows in shuffled batches (both of the study's MLP trainers)."""
    net.train()
    for idx in _batches(len(y), batch_size, generator):
        optimizer.zero_grad()
        criterion(net(X[idx]), y[idx]).backward()
        optimizer.step()


def _mean_batch_loss(net: Any, criterion: Any, X: Any, y: Any, batch_size: int) -> float:
    """The study's validation loss: the mean over batches of each batch's mean loss."""
    import torch

    net.eval()
    losses = []
    with torch.no_grad():
        for idx in _batches(len(y), batch_size):
            losses.append(float(criterion(net(X[idx]), y[idx])))
    return float(np.mean(losses)) if losses else float("nan")


def _softmax_p(net: Any, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
    import torch

    net.eval()
    xt = torch.as_tensor(np.asarray(X, dtype=np.float32))
    out = []
    with torch.no_grad():
        for idx in _batches(len(xt), batch_size):
            out.append(torch.softmax(net(xt[idx]), dim=1)[:, 1].numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def study_mlp_net(dim: int, hidden: tuple[int, ...] = (512, 256), dropout: float = 0.3) -> Any:
    """The study's ``MLPClassifier``: (Linear -> BatchNorm -> ReLU -> Dropout) per hidden layer -> Linear(., 2)."""
    import torch.nn as nn

    layers: list[Any] = []
    prev = dim
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout)]
        prev = width
    layers.append(nn.Linear(prev, 2))
    return nn.Sequential(*layers)


class _TorchStudyHead:
    """What the study's two torch MLP heads share once fitted: ``self.net`` (a 2-logit network),
    ``P(malignant) = softmax[:, 1]`` in batches of ``self.batch_size``, the study's decision
    ``P > 0.5``, and the network's weights as plain CPU tensors for ``head_state``."""

    net: Any
    batch_size: int

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _softmax_p(self.net, X, self.batch_size)

    def study_predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X) > 0.5).astype(int)

    def _weights(self) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}


class StudyMLPHead(_TorchStudyHead):
    """The study's MLP head, built and trained as its ``MLPTrainer`` did (STUDY.md §5.2).

    ``Linear(D, 512) -> BN -> ReLU -> Dropout(0.3) -> Linear(512, 256) -> BN -> ReLU -> Dropout(0.3)
    -> Linear(256, 2)`` on the raw embeddings (no standardisation); cross-entropy with label
    smoothing 0.1; Adam, lr 1e-4, no weight decay; ``ReduceLROnPlateau(mode=min, patience=3,
    factor=0.5)`` stepped on the validation loss; shuffled batches of 512; ``P(malignant) =
    softmax[:, 1]`` and the study's decision ``P > 0.5``.

    Quirks reproduced because they change the result:

    * the validation loss (early stopping and the scheduler) is the mean of the per-batch mean
      losses, not the per-image mean, and it uses the label-smoothed loss;
    * early stopping: training stops after ``patience`` (10) epochs without a strictly lower
      validation loss, and **the best weights are not restored**: the model tested is the last one;
    * there is no epoch limit in the study (``while True``); ``max_epochs`` (default 10,000) is only a
      safety stop, and ``info["hit_max_epochs"]`` says whether it was reached.

    Not reproduced: the study ran on a GPU when it had one (this head trains on the CPU) and did not
    seed its shuffling per run; a last training batch of one image is left out (batch norm cannot
    train on it; the study's run would have raised there).
    """

    def __init__(self, *, seed: int = 42, lr: float = 1e-4, hidden: tuple[int, ...] = (512, 256), dropout: float = 0.3,
                 batch_size: int = 512, patience: int = 10, label_smoothing: float = 0.1, max_epochs: int = 10_000):
        self.seed, self.lr, self.hidden, self.dropout = int(seed), float(lr), tuple(hidden), float(dropout)
        self.batch_size, self.patience, self.label_smoothing = int(batch_size), int(patience), float(label_smoothing)
        self.max_epochs = int(max_epochs)
        self.info: dict[str, Any] = {}

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            sample_weight: np.ndarray | None = None) -> "StudyMLPHead":
        import torch

        if X_val is None or y_val is None or len(y_val) == 0:
            raise ValueError("the study's MLP head needs validation embeddings (its early stopping)")
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        xt, yt = torch.as_tensor(np.asarray(X, np.float32)), torch.as_tensor(np.asarray(y, np.int64))
        xv, yv = torch.as_tensor(np.asarray(X_val, np.float32)), torch.as_tensor(np.asarray(y_val, np.int64))
        self.net = study_mlp_net(xt.shape[1], self.hidden, self.dropout)
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=3, factor=0.5)
        best, stale, history, epoch = float("inf"), 0, [], 0
        while epoch < self.max_epochs:
            epoch += 1
            _train_one_epoch(self.net, optimizer, criterion, xt, yt, self.batch_size, generator)
            val_loss = _mean_batch_loss(self.net, criterion, xv, yv, self.batch_size)
            history.append(round(val_loss, 6))
            scheduler.step(val_loss)
            if val_loss < best:
                best, stale = val_loss, 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        self.info = {"epochs_run": epoch, "best_val_loss": round(best, 6), "last_val_loss": history[-1],
                     "best_weights_restored": False, "hit_max_epochs": epoch >= self.max_epochs and stale < self.patience,
                     "val_loss_history": history, "protocol": "the study's MLPTrainer (STUDY.md §5.2)"}
        return self

    def head_state(self) -> dict[str, Any]:
        """Plain numbers and tensors (``torch.load(weights_only=True)``) that rebuild the fitted head."""
        return {"kind": "study_mlp", "dim": int(self.net[0].in_features), "hidden": [int(h) for h in self.hidden],
                "dropout": self.dropout, "state_dict": self._weights()}


def smote_lite(X: np.ndarray, y: np.ndarray, *, ratio: float = 1.0, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """The study's HPO-time oversampling: ``round(ratio * (majority - minority))`` new minority rows,
    each a uniform random point between two random minority rows (a pair drawn twice is moved to
    the next row); nothing when the minority has fewer than two rows."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) != 2:
        raise ValueError("SMOTE-lite needs two classes")
    minority = classes[np.argmin(counts)]
    n_new = int(round(ratio * max(0, int(counts.max()) - int(counts.min()))))
    rows = np.asarray(X, dtype=np.float32)[y == minority]
    m = len(rows)
    if n_new <= 0 or m < 2:
        return np.asarray(X, np.float32), y
    i = rng.integers(0, m, size=n_new)
    j = rng.integers(0, m, size=n_new)
    j = np.where(j == i, (j + 1) % m, j)
    lam = rng.random(size=(n_new, 1), dtype=np.float32)
    new = rows[i] + lam * (rows[j] - rows[i])
    return (np.concatenate([np.asarray(X, np.float32), new]).astype(np.float32),
            np.concatenate([y, np.full(n_new, minority, dtype=y.dtype)]))


_ACTIVATIONS = ("relu", "gelu", "leaky_relu")


def dynamic_mlp_net(dim: int, params: dict[str, Any]) -> Any:
    """The study's ``DynamicMLPFactory`` network for one search point."""
    import torch.nn as nn

    n_layers, units = int(params["n_hidden_layers"]), int(params["hidden_units"])
    if n_layers <= 0:
        sizes: list[int] = []
    elif params["width_scheme"] == "constant":
        sizes = [units] * n_layers
    else:
        sizes = [units, max(units // 2, 16), max(units // 4, 8)][:n_layers]
    act = {"relu": nn.ReLU, "gelu": nn.GELU, "leaky_relu": lambda: nn.LeakyReLU(negative_slope=0.1)}[params["activation"]]
    layers: list[Any] = []
    prev = dim
    for width in sizes:
        layers.append(nn.Linear(prev, width))
        if params["use_batch_norm"]:
            layers.append(nn.BatchNorm1d(width))
        layers.append(act())
        if params["use_dropout"]:
            layers.append(nn.Dropout(float(params.get("dropout", 0.0))))
        prev = width
    layers.append(nn.Linear(prev, 2))
    return nn.Sequential(*layers)


class DynamicMLPHead(_TorchStudyHead):
    """One configuration of the study's MLP search, trained as its ``dl_search`` did (see the
    module docstring): label smoothing 0.1, Adam/AdamW, ReduceLROnPlateau (patience 3), early
    stopping patience 10 with min_delta 1e-4, **best weights restored**; batches of 512."""

    def __init__(self, params: dict[str, Any], *, patience: int = 10, min_delta: float = 1e-4, batch_size: int = 512,
                 max_epochs: int = 10_000):
        self.params = dict(params)
        self.patience, self.min_delta, self.batch_size = int(patience), float(min_delta), int(batch_size)
        self.max_epochs = int(max_epochs)
        self.info: dict[str, Any] = {}

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, generator: Any) -> "DynamicMLPHead":
        import torch

        xt, yt = torch.as_tensor(np.asarray(X, np.float32)), torch.as_tensor(np.asarray(y, np.int64))
        xv, yv = torch.as_tensor(np.asarray(X_val, np.float32)), torch.as_tensor(np.asarray(y_val, np.int64))
        self.net = dynamic_mlp_net(xt.shape[1], self.params)
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        wd = float(self.params.get("weight_decay", 0.0)) if self.params.get("use_weight_decay") else 0.0
        opt_cls = torch.optim.AdamW if self.params["optimizer"] == "adamw" else torch.optim.Adam
        optimizer = opt_cls(self.net.parameters(), lr=float(self.params["lr"]), weight_decay=wd)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min",
                                                               patience=max(1, self.patience // 3), factor=0.5)
        best, stale, best_state, epoch = float("inf"), 0, copy.deepcopy(self.net.state_dict()), 0
        while epoch < self.max_epochs:
            epoch += 1
            _train_one_epoch(self.net, optimizer, criterion, xt, yt, self.batch_size, generator)
            val_loss = _mean_batch_loss(self.net, criterion, xv, yv, self.batch_size)
            scheduler.step(val_loss)
            if best - val_loss > self.min_delta:
                best, stale, best_state = val_loss, 0, copy.deepcopy(self.net.state_dict())
            else:
                stale += 1
                if stale >= self.patience:
                    break
        self.net.load_state_dict(best_state)
        self.info = {"epochs_run": epoch, "best_val_loss": round(best, 6), "best_weights_restored": True}
        return self

    def head_state(self) -> dict[str, Any]:
        """Plain numbers and tensors (``torch.load(weights_only=True)``) that rebuild the fitted head."""
        first = next(m for m in self.net if hasattr(m, "in_features"))
        return {"kind": "dynamic_mlp", "dim": int(first.in_features), "params": dict(self.params),
                "state_dict": self._weights()}


def head_from_state(state: dict[str, Any]) -> Any:
    """The head :meth:`StudyMLPHead.head_state` / :meth:`DynamicMLPHead.head_state` saved."""
    if state.get("kind") == "study_mlp":
        head: Any = StudyMLPHead(hidden=tuple(state["hidden"]), dropout=float(state["dropout"]))
        head.net = study_mlp_net(int(state["dim"]), head.hidden, head.dropout)
    elif state.get("kind") == "dynamic_mlp":
        head = DynamicMLPHead(state["params"])
        head.net = dynamic_mlp_net(int(state["dim"]), head.params)
    else:
        raise ValueError(f"unknown study head kind {state.get('kind')!r}")
    head.net.load_state_dict(state["state_dict"])
    head.net.eval()
    return head


def _suggest_mlp(trial: Any) -> dict[str, Any]:
    """The study's dl_search suggestions, in its order."""
    params = {"n_hidden_layers": trial.suggest_int("n_hidden_layers", 0, 3),
              "hidden_units": trial.suggest_categorical("hidden_units", [128, 256, 512, 1024]),
              "width_scheme": trial.suggest_categorical("width_scheme", ["constant", "pyramid"]),
              "activation": trial.suggest_categorical("activation", list(_ACTIVATIONS)),
              "use_batch_norm": trial.suggest_categorical("use_batch_norm", [True, False]),
              "use_dropout": trial.suggest_categorical("use_dropout", [True, False])}
    params["dropout"] = trial.suggest_float("dropout", 0.0, 0.6) if params["use_dropout"] else 0.0
    params["use_weight_decay"] = trial.suggest_categorical("use_weight_decay", [True, False])
    params["weight_decay"] = (trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True)
                              if params["use_weight_decay"] else 0.0)
    params["lr"] = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
    params["optimizer"] = trial.suggest_categorical("optimizer", ["adam", "adamw"])
    return params


def _macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, (p > 0.5).astype(int), average="macro", zero_division=0))


def search_mlp(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *, seed: int = 42,
               trials: int = 10, max_epochs: int = 10_000) -> tuple[DynamicMLPHead, float, list[dict[str, Any]]]:
    """The study's MLP search: (the best configuration trained again, best trial macro-F1, trials)."""
    import torch

    optuna = _optuna()
    X_aug, y_aug = smote_lite(X, y, ratio=1.0, seed=42)  # the study's loader: ratio 1, its fixed seed 42
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    def objective(trial: Any) -> float:
        head = DynamicMLPHead(_suggest_mlp(trial), max_epochs=max_epochs).fit(X_aug, y_aug, X_val, y_val, generator)
        return _macro_f1(np.asarray(y_val), head.predict_proba(X_val))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=int(trials))
    history = [{"params": t.params, "val_macro_f1": None if t.value is None else round(float(t.value), 6)}
               for t in study.trials]
    best = study.best_trial
    params = dict(best.params)
    params.setdefault("dropout", 0.0)
    params.setdefault("weight_decay", 0.0)
    final = DynamicMLPHead(params, max_epochs=max_epochs).fit(X_aug, y_aug, X_val, y_val, generator)
    final.info["smote_lite"] = {"rows_before": int(len(y)), "rows_after": int(len(y_aug)), "seed": 42}
    return final, float(study.best_value), history


# --------------------------------------------------------------------------------------------
# The preset as the probe cell calls it
# --------------------------------------------------------------------------------------------
def fit_study_head(head: str, preset: str, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
                   y_val: np.ndarray, *, seed: int = 42, trials: int = 10, options: dict[str, Any] | None = None
                   ) -> tuple[Any, dict[str, Any]]:
    """(fitted head, record) of ``head`` under ``preset`` (``study`` or ``study_hpo``)."""
    if head not in STUDY_HEADS:
        raise ValueError(f"head_preset {preset} has the study's heads only ({', '.join(STUDY_HEADS)}); "
                         f"{head!r} is dermbench's (use head_preset: dermbench)")
    if preset not in ("study", "study_hpo"):
        raise ValueError(f"unknown study head preset {preset!r}; use study or study_hpo")
    options = dict(options or {})
    y_train = np.asarray(y_train).astype(int)
    y_val = np.asarray(y_val).astype(int)
    max_epochs = int(options.get("mlp_max_epochs", 10_000))
    t0 = time.perf_counter()
    record: dict[str, Any] = {"preset": preset, "head": head, "study_head": {"rf": "random_forest"}.get(head, head)}
    if preset == "study":
        if head == "mlp":
            model: Any = StudyMLPHead(seed=seed, max_epochs=max_epochs).fit(X_train, y_train, X_val, y_val)
            record["params"] = {"hidden": [512, 256], "dropout": 0.3, "lr": 1e-4, "batch_size": 512,
                                "label_smoothing": 0.1, "patience": 10, "scheduler": "ReduceLROnPlateau(3, 0.5)"}
        else:
            estimator, params = study_estimator(head, seed=seed)
            model = StudyHead(estimator, params).fit(X_train, y_train)
            record["params"] = params
        record["search"] = None
    else:
        if head == "mlp":
            record["study_head"] = "dynamic_mlp"
            model, best, history = search_mlp(X_train, y_train, X_val, y_val, seed=seed, trials=trials,
                                              max_epochs=max_epochs)
            record.update(params=model.params, search={"sampler": f"TPESampler(seed={seed})", "trials": int(trials),
                                                       "objective": "validation macro-F1 at P > 0.5",
                                                       "best_value": round(best, 6), "history": history})
        else:
            params, best, history = search_classical(head, X_train, y_train, seed=seed, trials=trials)
            estimator, merged = study_estimator(head, params, seed=seed)
            model = StudyHead(estimator, merged).fit(X_train, y_train)
            record.update(params=merged, search={"sampler": f"TPESampler(seed={seed})", "trials": int(trials),
                                                 "objective": "mean 5-fold stratified CV macro-F1 on train",
                                                 "best_value": round(best, 6), "history": history})
    record["imbalance"] = IMBALANCE[head]
    record["fit_seconds"] = round(time.perf_counter() - t0, 3)
    if getattr(model, "info", None):
        record["training"] = model.info
    return model, record
