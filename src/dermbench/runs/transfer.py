"""Transfer evaluation: a trained cell scored on other datasets' test splits, with no retraining.

A finetune or probe cell whose spec lists ``eval_datasets`` (the grid key ``eval_datasets:``, or
``--eval-dataset`` on the commands) is evaluated, once it is complete, on each of those datasets.
Each evaluation is a run record of the same shape as a cell's, inside the trained cell::

    <cell>/transfer/<target dataset>/
      config.yaml                 the source cell, the target dataset (path, fingerprint), the identity
      predictions_validation.csv  the target's validation split (for the oracle threshold)
      predictions_test.csv
      metrics.json                metrics with grouped-bootstrap CIs at the deployment threshold,
                                  subgroups, exclusions, and extra.transfer (leaks, oracle threshold)
      exclusions.csv              the target's own exclusions + images the source trained on + unreadable
      subgroups.csv
      COMPLETE                    written last

How a target is scored
----------------------
1. **No leak**: target images of its validation and test splits that occur in the source's
   training data (train + validation) are excluded by :func:`dermbench.data.leaks.find_leaks`
   and reported in ``exclusions.csv`` with their reason; a transfer never scores a training image.
2. **The same model**: the cell's saved model (probe: backbone + saved head, the target's cached
   embeddings; finetune: the best epoch's checkpoint) through the paradigm's scorer
   (:mod:`.scorer`); then the cell's recorded calibrator, if any.
3. **The deployment threshold**: the cell's own operating threshold (chosen on the *training*
   dataset's validation split) is applied unchanged. The threshold the same policy would choose on
   the target's own validation split is reported beside it as the *oracle* (``extra.transfer.oracle``,
   with the test metrics at it), which says how much of a drop is the threshold alone.

The identity of a transfer record is the cell's identity plus ``train_dataset`` and
``test_dataset``. A re-run evaluates only targets without a complete, current record: one whose
source cell was completed again, or whose target dataset's content changed, is redone. Redoing the
trained cell removes its ``transfer/`` folder (:meth:`RunRecorder.begin`), so a transfer record
never outlives the model it evaluated.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..data.dataset import LesionDataset
from ..errors import DatasetError
from ..utils.console import get_logger
from ..utils.paths import safe_name
from .cell import CellSpec
from .record import COMPLETE, RunRecorder, is_complete, read_metrics, verify_complete

TRANSFER_DIR = "transfer"
EVAL_SPLITS = ("validation", "test")
log = get_logger("transfer")


@dataclass
class TransferResult:
    target: str          # dataset name
    path: Path
    status: str          # "done" | "skipped" | "failed"
    seconds: float = 0.0
    error: str = ""


def transfer_dir(cell: str | Path, target: str | Path) -> Path:
    """Folder of the evaluation of ``cell`` on the dataset folder (or name) ``target``."""
    return Path(cell) / TRANSFER_DIR / safe_name(Path(str(target)).name)


def transfer_targets(spec: CellSpec) -> list[str]:
    """The spec's evaluation datasets other than its own (a cell on its own dataset is in-domain)."""
    own = Path(spec.dataset).resolve()
    out: list[str] = []
    for target in spec.eval_datasets:
        if Path(target).resolve() != own and target not in out:
            out.append(target)
    return out


def transfer_state(cell: str | Path, target: str | Path) -> str:
    """``complete``, ``stale`` (complete, but of an earlier run of the cell or another version of
    the target dataset: redone), ``corrupt`` (a file its ``COMPLETE`` vouches for changed: redone),
    ``failed``, ``partial`` or ``todo``."""
    return transfer_status(cell, target)[0]


def transfer_status(cell: str | Path, target: str | Path) -> tuple[str, str]:
    """:func:`transfer_state` and why a record that is not current is redone (``""`` otherwise),
    for ``run --dry-run``."""
    folder = transfer_dir(cell, target)
    if is_complete(folder):
        try:
            recorded = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
            transfer = recorded.get("transfer") or {}
            if transfer.get("source_completed_at") != _completed_at(Path(cell)):
                return "stale", "the trained cell was redone since"
            from ..data.contract import dataset_fingerprint

            was = str(transfer.get("test_dataset", {}).get("fingerprint") or "")
            now = dataset_fingerprint(target)
            if was != now:
                return "stale", f"dataset changed: fingerprint {was[:12] or '?'}→{now[:12]}"
        except (OSError, ValueError, AttributeError, DatasetError) as exc:
            return "stale", f"its record cannot be checked ({type(exc).__name__})"
        return "complete", ""
    problem = verify_complete(folder)
    if problem:
        return "corrupt", problem
    if (folder / "error.txt").is_file():
        return "failed", "failed before"
    return ("partial", "not finished") if folder.is_dir() else ("todo", "")


def run_transfers(spec: CellSpec, cell: str | Path, *, force: bool = False) -> list[TransferResult]:
    """Evaluate the complete cell at ``cell`` on each of ``spec``'s evaluation datasets that has no
    current record (all of them with ``force``). A failing target is recorded in its folder
    (``error.txt``) and the others go on."""
    cell = Path(cell)
    return [_run_transfer(spec, cell, target, force) for target in transfer_targets(spec)]


def _run_transfer(spec: CellSpec, cell: Path, target: str, force: bool) -> TransferResult:
    """One target, under the lock of its folder (two runs never evaluate the same target at once)."""
    from ..utils.locks import exclusive_lock

    folder = transfer_dir(cell, target)
    name = Path(target).name
    if not force and transfer_state(cell, target) == "complete":
        return TransferResult(name, folder, "skipped")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder.parent / f".{folder.name}.lock"):
        if not force and transfer_state(cell, target) == "complete":  # evaluated while we waited
            return TransferResult(name, folder, "skipped")
        t0 = time.perf_counter()
        recorder = RunRecorder(folder)
        try:
            recorder.begin(transfer_config(spec, cell, target), keep_work=False)
            evaluate_transfer(spec, cell, target, recorder)
            if not is_complete(folder):
                raise RuntimeError("the transfer evaluation returned without completing its record")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one target must not stop the others (nor the grid)
            folder.mkdir(parents=True, exist_ok=True)
            recorder.fail(exc)
            return TransferResult(name, folder, "failed", time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
        return TransferResult(name, folder, "done", time.perf_counter() - t0)


def transfer_config(spec: CellSpec, cell: Path, target: str | Path) -> dict[str, Any]:
    """What a transfer record's ``config.yaml`` holds: the source cell, both datasets, the identity."""
    from ..data.contract import dataset_fingerprint

    identity = {**spec.identity.as_record(), "train_dataset": spec.dataset_name, "test_dataset": Path(target).name}
    return {"transfer": {"source_cell": str(cell.absolute()), "source_completed_at": _completed_at(cell),
                         "train_dataset": {"name": spec.dataset_name, "path": str(spec.dataset)},
                         "test_dataset": {"name": Path(target).name, "path": str(target),
                                          "fingerprint": dataset_fingerprint(target)}},
            "cell": spec.to_dict(), "identity": identity}


def evaluate_transfer(spec: CellSpec, cell: Path, target: str | Path, recorder: RunRecorder) -> dict[str, Any]:
    """Score the target's validation and test splits with the cell's model (module docstring) and
    write the record; returns its metrics."""
    from ..data.contract import load_dataset
    from ..data.leaks import find_leaks
    from ..metrics.calibration import Calibrator
    from .datasets import load_cell_dataset
    from .evaluate import calibrate_scores, finalize_cell, without_unreadable
    from .scorer import load_scorer

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    source_metrics = read_metrics(cell)
    # the split the cell trained on (its split seed's re-split, if any): what a target must not reuse
    source = load_cell_dataset(spec, quiet=True)
    dataset = load_dataset(target, strict=spec.strict, quiet=spec.quiet)
    splits = tuple(s for s in EVAL_SPLITS if s in dataset.splits and len(dataset.split(s)))
    if "test" not in splits:
        raise DatasetError(f"dataset {dataset.name!r} has no test images to evaluate {spec.label} on")
    timing["load_datasets_s"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    leaks = find_leaks(source, dataset, target_splits=splits)
    timing["leak_check_s"] = round(time.perf_counter() - t0, 3)
    if leaks.exclusions:
        log.info("%s -> %s: %d image(s) the cell trained on are excluded (%s)", source.name, dataset.name,
                 len(leaks.exclusions), ", ".join(f"{n} {r}" for r, n in leaks.record["excluded"].items() if n))

    t0 = time.perf_counter()
    scorer = load_scorer(cell, spec, source_metrics, spec.device)
    raw, unreadable = scorer.score_dataset(dataset, splits, progress=not spec.quiet)
    timing["score_s"] = round(time.perf_counter() - t0, 3)
    dataset, excluded = without_unreadable(dataset, unreadable)
    dataset = dataset.without(leaks.exclusions)
    scores = {}
    for split in splits:
        kept = set(dataset.split(split)["img_id"].astype(str))
        frame = raw[split]
        scores[split] = frame[frame["img_id"].astype(str).isin(kept)].reset_index(drop=True)
    if not len(scores["test"]):
        raise DatasetError(f"every test image of {dataset.name!r} is excluded ({len(leaks.exclusions)} occur in "
                           f"{source.name!r}'s training data); there is nothing left to evaluate on")

    recorded = source_metrics.get("calibration") or {}
    calibrator = Calibrator.from_record(recorded) if recorded.get("method") not in (None, "none") else None
    scores, calibration = calibrate_scores(dataset, scores, calibrator)
    threshold = _deployment_threshold(source_metrics, source.name)
    oracle = _oracle(spec, dataset, scores)

    identity = {**(source_metrics.get("identity") or spec.identity.as_record()),
                "train_dataset": spec.dataset_name, "test_dataset": Path(target).name}  # folder names, as config.yaml
    extra = {"transfer": {"train_dataset": {"name": source.name, "fingerprint": source.fingerprint,
                                            "split_seed": spec.split_seed, "modality": dataset_modality(source)},
                          "test_dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint,
                                           "modality": dataset_modality(dataset)},
                          "source_cell": str(cell.absolute()), "leaks": leaks.record, "oracle": oracle,
                          "in_domain_test_auroc": _in_domain_auroc(source_metrics)},
             "model": scorer.describe()}
    cell_record = {**spec.to_dict(), "dataset": str(Path(target).absolute()), "identity": identity}
    provenance = {"device": spec.device, "source_cell_provenance": source_metrics.get("provenance", {})}
    return finalize_cell(recorder, dataset, scores, threshold=threshold, threshold_policy=spec.threshold_policy,
                         n_boot=spec.n_boot, seed=spec.seed, provenance=provenance, timing=timing, extra=extra,
                         cell=cell_record, excluded_images=[*excluded, *leaks.exclusions], calibration=calibration)


def _deployment_threshold(metrics: dict[str, Any], source_name: str) -> dict[str, Any]:
    recorded = metrics.get("threshold") or {}
    if "value" not in recorded:
        raise ValueError("the source cell's metrics.json has no operating threshold; re-run the cell")
    chosen = recorded.get("chosen_on", "")
    where = f"{source_name} validation" if chosen == "validation" else chosen
    return {**recorded, "chosen_on": f"training cell ({where})",
            "note": (recorded.get("note") or "") + (" " if recorded.get("note") else "")
            + "the training cell's threshold, applied unchanged (deployment); the oracle is in extra.transfer"}


def _oracle(spec: CellSpec, dataset: LesionDataset, scores: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The threshold ``spec``'s policy chooses on the *target's* validation split, and the test
    metrics (with CIs) at it."""
    from ..data.splits import bootstrap_groups
    from ..metrics import evaluate
    from .evaluate import attach_labels, operating_threshold

    validation = attach_labels(dataset, "validation", scores["validation"]) if "validation" in scores else None
    threshold = operating_threshold(spec.threshold_policy, validation)
    test = attach_labels(dataset, "test", scores["test"])
    groups, unit = bootstrap_groups(test)
    metrics = evaluate(test["label"].to_numpy(), test["p_malignant"].to_numpy(), threshold=threshold["value"],
                       groups=groups, n_boot=spec.n_boot, seed=spec.seed, group_unit=unit)
    return {"threshold": {**threshold, "chosen_on": f"{dataset.name} {threshold['chosen_on']} (oracle)"},
            "splits": {"test": metrics}}


def _in_domain_auroc(metrics: dict[str, Any]) -> float | None:
    value = (((metrics.get("splits") or {}).get("test") or {}).get("metrics") or {}).get("auroc") or {}
    return value.get("value")


def dataset_modality(dataset: LesionDataset) -> str:
    """``dermoscopic``, ``clinical``, ``mixed`` or ``unknown``: the ``modality`` column of the
    dataset's rows (all splits), else the card's ``modality``."""
    values: set[str] = set()
    for frame in dataset.splits.values():
        if "modality" in frame.columns:
            values |= {str(v).strip().lower() for v in frame["modality"].dropna()}
    if not values and dataset.card.get("modality"):
        values = {str(dataset.card["modality"]).lower()}
    if not values:
        return "unknown"
    return values.pop() if len(values) == 1 else "mixed"


def _completed_at(cell: Path) -> str | None:
    try:
        return json.loads((cell / COMPLETE).read_text(encoding="utf-8")).get("completed_at")
    except (OSError, ValueError, AttributeError):
        return None
