"""One metric module for every paradigm (PRODUCT.md section 6).

Pure functions of labels ``y`` (0/1, 1 = malignant) and scores ``p`` (p_malignant in [0, 1]):
no printing, plotting or file writing. Invalid input (NaN scores, labels other than 0/1, length
mismatch, no rows) raises ValueError with the reason; a metric that is undefined for valid input
(e.g. AUROC with one class) is None with a reason, never a silent NaN.

- :mod:`.ranking`          threshold-free: AUROC, AUPRC, ISIC 2024 pAUC, sens@spec, Brier, ECE
- :mod:`.operating_point`  accuracy ... NPV and the confusion matrix at pred = p >= threshold
- :mod:`.thresholds`       threshold policies chosen on validation (fixed, youden, sensitivity, specificity)
- :mod:`.bootstrap`        patient/lesion/image bootstrap CIs and the per-split ``evaluate`` record
- :mod:`.compare`          DeLong test and paired bootstrap of two models on the same images
- :mod:`.subgroups`        per-subgroup table, Fitzpatrick groups, age bands
- :mod:`.summary`          mean and sd over seeds
"""

from .bootstrap import BootstrapCI, bootstrap_ci, bootstrap_replicates, evaluate
from .compare import delong_test, paired_bootstrap
from .names import (
    AT_THRESHOLD_NAMES,
    CONFUSION_NAMES,
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    THRESHOLD_FREE_NAMES,
    sens_at_spec_name,
)
from .operating_point import at_threshold, predict
from .ranking import roc_points, threshold_free
from .subgroups import age_band, fitzpatrick_group, subgroup_table
from .summary import multi_seed_summary
from .thresholds import ThresholdPolicy, ThresholdPolicyError, choose_threshold, parse_threshold_policy

__all__ = [
    "AT_THRESHOLD_NAMES",
    "BootstrapCI",
    "CONFUSION_NAMES",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "THRESHOLD_FREE_NAMES",
    "ThresholdPolicy",
    "ThresholdPolicyError",
    "age_band",
    "at_threshold",
    "bootstrap_ci",
    "bootstrap_replicates",
    "choose_threshold",
    "delong_test",
    "evaluate",
    "fitzpatrick_group",
    "multi_seed_summary",
    "paired_bootstrap",
    "parse_threshold_policy",
    "predict",
    "roc_points",
    "sens_at_spec_name",
    "subgroup_table",
    "threshold_free",
]
