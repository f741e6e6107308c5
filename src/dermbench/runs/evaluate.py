"""From a paradigm's scores to a complete run record — the same for every paradigm.

A paradigm produces ``p_malignant`` per ``img_id`` for the validation and test splits and calls
:func:`finalize_cell`. Labels are taken from the dataset (never from the paradigm), the operating
threshold is chosen on validation by the configured policy and applied unchanged to test, and
metrics with bootstrap CIs (resampling patients or lesions when the dataset has them), subgroup
tables and the exclusions are written with the cell's provenance.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import pandas as pd

from ..data.dataset import LesionDataset
from ..data.exclusions import Exclusion, count_by_reason, exclusion_frame
from ..data.splits import bootstrap_groups
from .provenance import card_essentials, collect_provenance
from .record import RunRecorder

#: Subgroup columns of the contract and how their values are grouped for reporting.
SUBGROUP_COLUMNS = ("fitzpatrick", "sex", "age", "site", "source", "modality")


def attach_labels(dataset: LesionDataset, split: str, scores: pd.DataFrame) -> pd.DataFrame:
    """Join a paradigm's ``img_id, p_malignant[, extras]`` with the dataset's labels.

    Every usable image of the split must have exactly one score: a missing or unknown id is a
    bug in the paradigm and raises, rather than silently shrinking the test set.
    """
    if "img_id" not in scores.columns or "p_malignant" not in scores.columns:
        raise ValueError(f"scores for {split} need columns img_id and p_malignant; got {list(scores.columns)}")
    truth = dataset.split(split)
    scores = scores.copy()
    scores["img_id"] = scores["img_id"].astype(str)
    if scores["img_id"].duplicated().any():
        raise ValueError(f"scores for {split} repeat img_id {scores['img_id'][scores['img_id'].duplicated()].iloc[0]!r}")
    expected = set(truth["img_id"])
    got = set(scores["img_id"])
    if expected - got:
        missing = sorted(expected - got)
        raise ValueError(f"{len(missing)} image(s) of {split} have no score (e.g. {missing[0]!r}); "
                         f"a paradigm must score every usable image, scoring failures as wrong")
    if got - expected:
        extra = sorted(got - expected)
        raise ValueError(f"{len(extra)} scored id(s) are not in {split} (e.g. {extra[0]!r})")
    # diagnosis: the error pages show it beside each image (what the missed lesion was)
    keep = ["img_id", "label"] + [c for c in ("patient_id", "lesion_id", *SUBGROUP_COLUMNS, "diagnosis")
                                  if c in truth.columns]
    # SUBGROUP_COLUMNS includes "source", which also namespaces ids in the bootstrap
    extra_cols = [c for c in scores.columns if c not in ("label", "pred") and c not in keep]
    merged = truth[keep].merge(scores[["img_id"] + [c for c in extra_cols if c != "img_id"]], on="img_id", how="left")
    p = pd.to_numeric(merged["p_malignant"], errors="coerce")
    if p.isna().any() or ((p < 0) | (p > 1)).any():
        raise ValueError(f"scores for {split}: p_malignant must be numbers in [0, 1] "
                         f"({int(p.isna().sum())} missing, range {p.min()}..{p.max()})")
    merged["p_malignant"] = p.astype(float)
    return merged


def without_unreadable(dataset: LesionDataset, errors: Iterable[Exclusion]
                       ) -> tuple[LesionDataset, list[Exclusion]]:
    """The dataset minus images a paradigm could not decode (the image cache's or loader's
    ``errors``), and those images as exclusions for ``finalize_cell`` (once each).

    The loader decode-checks every image first, so this is rare (a file changed or broke after
    loading); such an image is excluded and reported like any other unreadable image, the same
    way in every paradigm."""
    excluded: dict[tuple[str, str], Exclusion] = {}
    for e in errors:
        excluded.setdefault((e.split, e.img_id), e.with_detail_prefix("image cache"))
    if not excluded:
        return dataset, []
    return dataset.without(excluded.values()), list(excluded.values())


def subgroup_tables(frame: pd.DataFrame, threshold: float, min_n: int = 30,
                    columns: Iterable[str] = SUBGROUP_COLUMNS,
                    notes: list[str] | None = None) -> pd.DataFrame:
    """Subgroup metrics of one split for every subgroup column present (long format).

    A column whose values cannot be grouped (e.g. a Fitzpatrick value outside I-VI) is left out
    of the table and the reason is appended to ``notes`` (recorded in metrics.json).
    """
    from ..metrics import age_band, fitzpatrick_group, subgroup_table

    parts = []
    y = frame["label"].to_numpy()
    p = frame["p_malignant"].to_numpy()
    for col in columns:
        if col not in frame.columns or frame[col].isna().all():
            continue
        values = frame[col]
        try:
            if col == "fitzpatrick":
                values = pd.Series(fitzpatrick_group(values), index=frame.index)
            elif col == "age":
                values = pd.Series(age_band(values), index=frame.index)
        except ValueError as exc:
            if notes is not None:
                notes.append(f"no subgroup table for {col!r}: {exc}")
            continue
        table = subgroup_table(y, p, values.to_numpy(dtype=object), threshold=threshold, min_n=min_n, name=col)
        table.insert(0, "attribute", col)
        parts.append(table)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def operating_threshold(threshold_policy: str, validation: pd.DataFrame | None) -> dict[str, Any]:
    """The operating threshold of a cell: ``{"policy", "value", "chosen_on", "note"}``.

    A data-driven policy is applied to the validation frame (``label``, ``p_malignant``) only; the
    value is then used unchanged on test. A malformed policy raises (a configuration error, never a
    reason to fall back). When the policy cannot be applied (no validation scores, or a validation
    split without the class it needs) 0.5 is used and ``chosen_on``/``note`` say so.
    """
    from ..metrics import ThresholdPolicyError, choose_threshold, parse_threshold_policy

    policy = parse_threshold_policy(threshold_policy)
    record = {"policy": str(policy), "value": 0.5, "chosen_on": "fallback fixed:0.5", "note": ""}
    if policy.kind == "fixed":
        return {**record, "value": choose_threshold(policy), "chosen_on": "fixed"}
    if validation is None:
        return {**record, "note": f"no validation scores to apply {threshold_policy!r}; used 0.5"}
    try:
        value = float(choose_threshold(policy, validation["label"].to_numpy(), validation["p_malignant"].to_numpy()))
    except ThresholdPolicyError as exc:
        return {**record, "note": f"policy {threshold_policy!r} could not be applied on validation ({exc}); used 0.5"}
    return {**record, "value": value, "chosen_on": "validation"}


def finalize_cell(
    recorder: RunRecorder,
    dataset: LesionDataset,
    scores: dict[str, pd.DataFrame],
    *,
    threshold_policy: str = "fixed:0.5",
    n_boot: int = 1000,
    seed: int = 0,
    subgroup_min_n: int = 30,
    provenance: dict[str, Any] | None = None,
    timing: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
    cell: dict[str, Any] | None = None,
    excluded_images: Iterable[Exclusion] = (),
    calibration: dict[str, Any] | None = None,
    threshold: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score, record and complete a cell. ``scores`` maps split name to ``img_id, p_malignant``.

    ``extra`` carries paradigm-specific results (e.g. ``unparsed_rate`` of a VLM, chosen
    hyperparameters of a head); ``excluded_images`` lists images the paradigm could not read
    (e.g. from the image cache) in addition to the dataset's own exclusions.

    ``calibration`` is the record :func:`calibrate_scores` returned for these scores (their
    ``p_malignant`` calibrated, ``p_uncalibrated`` kept): ECE and Brier before and after are added
    per split. ``threshold`` is an operating threshold already chosen elsewhere (a transfer
    evaluation uses its training cell's, chosen on the training dataset's validation split) and
    is used instead of applying ``threshold_policy`` here.
    """
    from ..metrics import evaluate

    t0 = time.perf_counter()
    frames = {split: attach_labels(dataset, split, df) for split, df in scores.items()}
    chosen_here = threshold is None
    threshold_record = dict(threshold) if threshold is not None else operating_threshold(
        threshold_policy, frames.get("validation"))
    threshold = threshold_record["value"]
    if chosen_here and threshold_record.get("note"):
        # a fallback on this dataset's validation split, the same for every cell of this dataset and
        # policy: one line per grid, and in the record (a given threshold, e.g. a transfer's, keeps
        # its note in the record only: it is not about this dataset)
        from ..utils.console import note_once

        note_once(f"threshold|{dataset.fingerprint}|{threshold_record['policy']}",
                  f"{dataset.name}: {threshold_record['note']} (every cell with this policy on this dataset)",
                  name="evaluate")

    split_metrics: dict[str, Any] = {}
    subgroup_parts = []
    subgroup_notes: list[str] = []
    for split, frame in frames.items():
        frame["pred"] = (frame["p_malignant"] >= threshold).astype(int)
        groups, group_unit = bootstrap_groups(frame)
        split_metrics[split] = evaluate(frame["label"].to_numpy(), frame["p_malignant"].to_numpy(),
                                        threshold=threshold, groups=groups, n_boot=n_boot, seed=seed,
                                        group_unit=group_unit)
        sub = subgroup_tables(frame, threshold, subgroup_min_n, notes=subgroup_notes)
        if len(sub):
            sub.insert(0, "split", split)
            subgroup_parts.append(sub)
        pred_cols = ["img_id", "label", "p_malignant", "pred"] + [
            c for c in frame.columns if c not in ("img_id", "label", "p_malignant", "pred")]
        recorder.save_predictions(split, frame[pred_cols])

    if subgroup_parts:
        recorder.save_frame("subgroups.csv", pd.concat(subgroup_parts, ignore_index=True))
    exclusions = [*dataset.exclusions, *excluded_images]
    recorder.save_frame("exclusions.csv", exclusion_frame(exclusions))

    timing = dict(timing or {})
    timing["evaluate_s"] = round(time.perf_counter() - t0, 3)
    essentials = card_essentials(dataset)
    # a re-split dataset (split_seeds) has its own fingerprint for the caches; the record keeps the
    # folder's, which is what "did the dataset change" compares against
    folder_fingerprint = (dataset.card.get("resplit") or {}).get("base_fingerprint") or dataset.fingerprint
    metrics = {
        "cell": cell or {},
        "identity": (cell or {}).get("identity"),  # dermbench.runs.cell.CellIdentity.as_record(): how the report groups
        "dataset": {"name": dataset.name, "root": str(dataset.root), "fingerprint": folder_fingerprint,
                    "counts": dataset.counts(), "warnings": dataset.warnings,
                    "premalignant_policy": dataset.card.get("premalignant_policy"),
                    # prepare --labels / --split (dataset.json): which label definition, and whether the split is the
                    # study's leaky image-level one
                    "label_definition": dataset.card.get("label_definition"),
                    "split_grouping": dataset.card.get("split_grouping"),
                    # the card's essentials (source, licence, label mapping, prepare-time exclusions, subsampling,
                    # split policy and seeds): what a reader of these numbers needs to know about the data
                    "provenance": essentials},
        "threshold": threshold_record,
        "splits": split_metrics,
        "subgroups": {"file": "subgroups.csv" if subgroup_parts else None, "min_n": subgroup_min_n,
                      "notes": sorted(set(subgroup_notes))},
        # count/by_reason: rows excluded when loading or decoding for this run; prepare: rows `prepare` dropped
        # before the dataset was written (its excluded.csv), e.g. DDI metadata rows without an image
        "exclusions": {"count": len(exclusions), "by_reason": count_by_reason(exclusions), "file": "exclusions.csv",
                       "prepare": essentials["prepare_exclusions"]},
        "calibration": _calibration_record(calibration, frames),
        "extra": extra or {},
        "timing": timing,
        "provenance": collect_provenance(dataset_fingerprint=folder_fingerprint, **(provenance or {})),
    }
    recorder.finish(metrics)
    return metrics


def calibrate_scores(dataset: LesionDataset, scores: dict[str, pd.DataFrame], calibration: Any
                     ) -> tuple[dict[str, pd.DataFrame], dict[str, Any] | None]:
    """Calibrate every split's ``p_malignant`` (``dermbench.metrics.calibration``).

    ``calibration``: ``None``/``"none"`` leaves the scores alone (record None); a method name
    (``temperature``, ``platt``, ``isotonic``) is fitted on the validation split's scores and the
    dataset's labels; a fitted :class:`~dermbench.metrics.calibration.Calibrator` (a transfer
    evaluation: the training cell's) is applied as it is. The returned frames hold the calibrated
    ``p_malignant`` and the paradigm's own score as ``p_uncalibrated``; the record (for
    :func:`finalize_cell`) holds the fitted calibrator. When the validation scores cannot fit the
    method (one class only) the scores stay uncalibrated and the record says why.
    """
    from ..metrics.calibration import Calibrator, fit_calibrator

    if calibration is None or calibration == "none":
        return scores, None
    if isinstance(calibration, Calibrator):
        calibrator, fitted_on = calibration, "the training cell's validation split"
    else:
        if "validation" not in scores:
            raise ValueError(f"{calibration} calibration is fitted on validation scores; none were given")
        frame = attach_labels(dataset, "validation", scores["validation"])
        try:
            calibrator = fit_calibrator(str(calibration), frame["label"].to_numpy(), frame["p_malignant"].to_numpy())
        except ValueError as exc:
            if str(calibration) not in ("temperature", "platt", "isotonic"):
                raise
            return scores, {"method": "none", "requested": str(calibration), "fitted_on": "validation",
                            "note": f"not calibrated: {exc}"}
        fitted_on = "validation"
    out = {}
    for split, frame in scores.items():
        frame = frame.copy()
        raw = pd.to_numeric(frame["p_malignant"], errors="coerce").to_numpy(dtype=float)
        frame["p_uncalibrated"] = raw
        frame["p_malignant"] = calibrator.apply(raw)
        out[split] = frame
    return out, {**calibrator.as_record(), "requested": calibrator.method, "fitted_on": fitted_on, "note": ""}


def _calibration_record(calibration: dict[str, Any] | None, frames: dict[str, pd.DataFrame]) -> dict[str, Any] | None:
    """``metrics.json`` ``calibration``: the calibrator and, per split, ECE/Brier before and after."""
    from ..metrics.calibration import calibration_change

    if calibration is None:
        return None
    splits = {split: calibration_change(frame["label"].to_numpy(), frame["p_uncalibrated"].to_numpy(),
                                        frame["p_malignant"].to_numpy())
              for split, frame in frames.items() if "p_uncalibrated" in frame.columns}
    return {**calibration, "splits": splits}
