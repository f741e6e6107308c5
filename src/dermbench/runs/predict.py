"""``dermbench predict``: a completed finetune or probe cell scores new image files.

The cell's model is loaded by its paradigm's scorer (:mod:`.scorer`: no code from the cell folder
is executed; checkpoints with ``weights_only``, saved heads in a safe format after a sha256 check),
every image goes through the decoding and preprocessing the cell trained with, the cell's recorded
calibrator is applied, and the decision is taken at the cell's recorded operating threshold:
``pred = 1`` (malignant) when ``p_malignant >= operating_threshold``, as in its run record.

Inputs (:func:`image_inputs`): image files; folders (every file below them, recursively, in name
order; hidden files are counted and left out); CSV files with a ``path`` (or ``image``/``file``)
column, relative paths taken from the CSV's folder, and an optional ``img_id`` column. A file that
cannot be decoded is listed with its reason (the exclusion reason codes: ``unreadable_image``,
``truncated_image`` ...), never skipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UsageError
from .scorer import load_scorer, read_cell

PATH_COLUMNS = ("path", "image", "file")


@dataclass
class ImageInput:
    image: str        # as given or listed (what the output's ``image`` column shows)
    path: str         # the file read
    img_id: str


@dataclass
class Prediction:
    """What :func:`predict_images` returns: one row per scored image, one per unreadable image,
    the cell's identity, and notes (hidden files left out of folders ...)."""

    frame: pd.DataFrame
    unreadable: pd.DataFrame
    identity: dict[str, Any]
    threshold: float
    notes: list[str] = field(default_factory=list)


def image_inputs(inputs: list[str]) -> tuple[list[ImageInput], list[str]]:
    """The images named by ``inputs`` (see the module docstring) and notes on what was left out."""
    images: list[ImageInput] = []
    notes: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            entries = sorted(path.rglob("*"))
            # a dangling link is an image that is missing (listed unreadable), not something to drop
            files = [p for p in entries if p.is_file() or (p.is_symlink() and not p.exists())]
            hidden = [p for p in files if any(part.startswith(".") for part in p.relative_to(path).parts)]
            if hidden:
                notes.append(f"{len(hidden)} hidden file(s) under {path} left out (e.g. {hidden[0].name})")
            linked = [p for p in entries if p.is_symlink() and p.is_dir()]
            if linked:  # rglob does not follow them (a link may loop): give them as inputs of their own
                notes.append(f"{len(linked)} symlinked folder(s) under {path} not followed "
                             f"(e.g. {linked[0].relative_to(path).as_posix()}); give them as inputs of their own")
            images += [ImageInput(str(p), str(p.absolute()), p.relative_to(path).as_posix())
                       for p in files if p not in set(hidden)]
        elif path.is_file() and path.suffix.lower() == ".csv":
            images += _csv_inputs(path)
        elif path.is_file():
            images.append(ImageInput(item, str(path.absolute()), path.name))
        else:
            raise UsageError(f"{item} is neither an image file, a folder nor a CSV of image paths")
    if not images:
        raise UsageError(f"no image files in {', '.join(inputs)}")
    return images, notes


def _csv_inputs(csv: Path) -> list[ImageInput]:
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {csv} as a CSV ({exc})") from None
    column = next((c for c in PATH_COLUMNS if c in frame.columns), None)
    if column is None:
        raise UsageError(f"{csv} has no image path column; name one of {', '.join(PATH_COLUMNS)} "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    out = []
    for k, row in frame.iterrows():
        value = str(row[column]).strip()
        if not value:
            raise UsageError(f"{csv} line {k + 2}: empty {column!r}")
        path = Path(value).expanduser()
        path = path if path.is_absolute() else csv.parent / path
        img_id = str(row["img_id"]).strip() if "img_id" in frame.columns and str(row["img_id"]).strip() else value
        out.append(ImageInput(value, str(path.absolute()), img_id))
    return out


def cell_identity_columns(cell: Path, spec: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """What identifies the model that scored an image: the cell, its model and weights, the
    dataset it was trained on (name and content fingerprint), its threshold policy and calibration."""
    identity = metrics.get("identity") or spec.identity.as_record()
    threshold = metrics.get("threshold") or {}
    calibration = metrics.get("calibration") or {}
    return {"paradigm": spec.paradigm, "model": identity.get("model"),
            "weights": (metrics.get("provenance") or {}).get("weights") or spec.settings.get("weights"),
            "config_label": identity.get("config_label"), "cell_label": identity.get("label"), "seed": spec.seed,
            "train_dataset": (metrics.get("dataset") or {}).get("name", spec.dataset_name),
            "dataset_fingerprint": (metrics.get("dataset") or {}).get("fingerprint"),
            "threshold_policy": threshold.get("policy", spec.threshold_policy),
            "threshold_chosen_on": threshold.get("chosen_on"),
            "calibration": calibration.get("method", "none"), "cell": str(Path(cell).absolute())}


def predict_images(cell: str | Path, inputs: list[str], *, device: str = "auto", progress: bool = True) -> Prediction:
    """Score ``inputs`` with the complete cell in ``cell`` (see the module docstring)."""
    from ..metrics.calibration import Calibrator

    cell = Path(cell)
    spec, metrics = read_cell(cell)
    images, notes = image_inputs(inputs)
    identity = cell_identity_columns(cell, spec, metrics)
    threshold = float((metrics.get("threshold") or {})["value"])
    scorer = load_scorer(cell, spec, metrics, device)
    scores, failed = scorer.score_files([im.path for im in images], progress=progress)
    notes += list(scorer.describe().get("notes") or [])

    recorded = metrics.get("calibration") or {}
    calibrator = Calibrator.from_record(recorded) if recorded.get("method") not in (None, "none") else None
    rows = []
    positions = sorted(scores)
    raw = [scores[k] for k in positions]
    calibrated = calibrator.apply(raw) if calibrator is not None and raw else raw
    for k, p_raw, p in zip(positions, raw, calibrated):
        im = images[k]
        row = {"image": im.image, "img_id": im.img_id, "p_malignant": float(p)}
        if calibrator is not None:
            row["p_uncalibrated"] = float(p_raw)
        pred = int(float(p) >= threshold)
        rows.append({**row, "pred": pred, "decision": "malignant" if pred else "benign",
                     "operating_threshold": threshold, **identity})
    columns = ["image", "img_id", "p_malignant"] + (["p_uncalibrated"] if calibrator is not None else []) + \
        ["pred", "decision", "operating_threshold", *identity]
    unreadable = pd.DataFrame([{"image": images[k].image, "img_id": images[k].img_id, "reason": reason,
                                "detail": detail} for k, (reason, detail) in sorted(failed.items())],
                              columns=["image", "img_id", "reason", "detail"])
    return Prediction(pd.DataFrame(rows, columns=columns), unreadable, identity, threshold, notes)
