"""Registry of probe heads (classical and MLP).

Each entry points at a :class:`dermbench.paradigms.probe.head_models.HeadSpec` (imported only
when used): how the head is built, its small declared hyperparameter grid (searched on the
validation split; the chosen values are used for test and recorded) and how it handles class
imbalance. ``[paper]`` marks the heads the MICCAI 2026 study had; its exact versions (fixed
defaults, or its Optuna search) are the probe setting ``head_preset: study`` / ``study_hpo``
(:mod:`dermbench.paradigms.probe.study_heads`).
"""

from ...registry import Registry

HEADS = Registry("probe head")

_M = "dermbench.paradigms.probe.head_models"
HEADS.add("logreg", f"{_M}:LOGREG", "logistic regression on standardised embeddings (the linear probe)",
          grid="C in 0.001, 0.01, 0.1, 1, 10", imbalance="class_weight")
HEADS.add("svm", f"{_M}:SVM", "SVM, RBF kernel, Platt probabilities, standardised embeddings [paper]",
          grid="C in 0.1, 1, 10", imbalance="class_weight")
HEADS.add("rf", f"{_M}:RF", "random forest, 500 trees, balanced_subsample [paper: 100 trees]",
          grid="min_samples_leaf in 1, 3", imbalance="class_weight (balanced_subsample)")
HEADS.add("knn", f"{_M}:KNN", "k nearest neighbours (cosine, distance-weighted)",
          grid="k in 5, 15, 31", imbalance="none (use --balance)")
HEADS.add("hgb", f"{_M}:HGB", "scikit-learn histogram gradient boosting",
          grid="learning_rate in 0.05, 0.1", imbalance="class_weight")
HEADS.add("xgboost", f"{_M}:XGBOOST", "XGBoost, 300 trees, depth 6, lr 0.1 [paper] (optional extra xgboost)",
          grid="max_depth in 6, 3", imbalance="scale_pos_weight", extra="xgboost")
HEADS.add("mlp", f"{_M}:MLP", "PyTorch MLP 512-256, dropout 0.3, early stopping on validation, best epoch restored [paper]",
          grid="lr in 1e-3, 3e-4", imbalance="pos_weight in the loss")
