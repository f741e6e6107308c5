"""The run record of one cell (PRODUCT §7): its folder layout and how it is written.

::

    runs/<experiment>/<paradigm>/<model>/<dataset>/seed<k>/
      config.yaml                  resolved configuration of the cell
      predictions_validation.csv   img_id,label,p_malignant,pred[,extra columns]
      predictions_test.csv
      metrics.json                 metrics with CIs per split, threshold, exclusions, timing, provenance
      exclusions.csv               dataset rows that were not used, with reasons
      error.txt                    only for a failed cell
      COMPLETE                     written last; a cell without it is partial and is redone

``COMPLETE`` vouches for the files of the record: it lists each file the recorder wrote with its
size and sha256 (of the bytes written). A cell is complete only while every listed file is there
with those bytes (:func:`verify_complete`); a truncated ``metrics.json`` or an edited predictions
file makes the cell incomplete, so ``run`` redoes it and ``report`` leaves it out with a warning.

Every file is written atomically. :meth:`RunRecorder.begin` removes the outputs of an earlier,
partial or failed attempt so a resumed grid never mixes two attempts; extra working state that
should survive a kill (training checkpoints, a VLM answer cache) lives in ``work/`` and is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..utils.atomic import atomic_write_bytes, atomic_write_text
from ..utils.filestamp import sha256_file
from ..utils.paths import safe_name

COMPLETE = "COMPLETE"
PREDICTION_COLUMNS = ("img_id", "label", "p_malignant", "pred")
_OUTPUTS = ("config.yaml", "metrics.json", "exclusions.csv", "error.txt", COMPLETE)


def cell_dir(runs_root: str | Path, experiment: str, paradigm: str, model: str, dataset: str, seed: int) -> Path:
    """Folder of one cell. Names are made file-system safe (``hf-hub:org/m`` -> ``hf-hub_org_m``)."""
    return (Path(runs_root) / safe_name(experiment) / safe_name(paradigm) / safe_name(model)
            / safe_name(dataset) / f"seed{int(seed)}")


def is_complete(path: str | Path) -> bool:
    """A cell is complete when its marker exists and every file it vouches for is as recorded."""
    return verify_complete(path) == ""


def verify_complete(path: str | Path) -> str | None:
    """Check a cell's files against its ``COMPLETE`` marker.

    Returns None when there is no marker (the cell is not complete), ``""`` when every file the
    marker lists has the recorded size and sha256, and otherwise what does not match, naming the
    file. A marker written before markers carried hashes (a plain list of names) vouches only for
    presence; its ``metrics.json`` must at least be readable JSON."""
    folder = Path(path)
    marker = folder / COMPLETE
    if not marker.is_file():
        return None
    try:
        files = json.loads(marker.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return f"{marker} is not a readable completion marker"
    if isinstance(files, list):
        for name in files:
            if not (folder / str(name)).is_file():
                return f"{folder / str(name)} is missing"
        if "metrics.json" in files:
            try:
                json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                return f"{folder / 'metrics.json'} is not readable JSON ({exc})"
        return ""
    if not isinstance(files, dict) or not files:
        return f"{marker} lists no files"
    for name, vouched in sorted(files.items()):
        file = folder / name
        try:
            size = file.stat().st_size
        except OSError:
            return f"{file} is missing"
        if not isinstance(vouched, dict):
            return f"{marker} has no size and sha256 for {name}"
        if size != vouched.get("size"):
            return f"{file} has {size} bytes; {COMPLETE} vouches for {vouched.get('size')}"
        if sha256_file(file) != vouched.get("sha256"):
            return f"{file} is not the file {COMPLETE} vouches for (sha256 differs)"
    return ""


def validate_predictions(df: pd.DataFrame, where: str = "predictions") -> pd.DataFrame:
    """Check a predictions frame before it is written or scored; return it with clean dtypes."""
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where} lacks column(s) {missing}; needs {list(PREDICTION_COLUMNS)}")
    out = df.copy()
    out["img_id"] = out["img_id"].astype(str)
    dup = out["img_id"][out["img_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{where} has {len(dup)} duplicate img_id(s), e.g. {dup.iloc[0]!r}")
    p = pd.to_numeric(out["p_malignant"], errors="coerce")
    if p.isna().any():
        raise ValueError(f"{where}: {int(p.isna().sum())} p_malignant value(s) are missing or not numbers")
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"{where}: p_malignant must lie in [0, 1]; found {float(p.min())}..{float(p.max())}")
    out["p_malignant"] = p.astype(float)
    for col in ("label", "pred"):
        vals = pd.to_numeric(out[col], errors="coerce")
        if vals.isna().any() or not vals.isin([0, 1]).all():
            raise ValueError(f"{where}: column {col!r} must be 0 (benign) or 1 (malignant)")
        out[col] = vals.astype(int)
    return out


class RunRecorder:
    """Writes one cell's record. Use :meth:`begin`, the ``save_*`` methods, then :meth:`finish`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.work = self.path / "work"
        self._written: dict[str, dict[str, Any]] = {}  # file name -> size and sha256 of the bytes written

    # -- life cycle ---------------------------------------------------------------------
    def begin(self, config: dict[str, Any], *, keep_work: bool = True) -> None:
        """Start (or restart) the cell: drop any earlier outputs, keep ``work/`` if asked."""
        self.path.mkdir(parents=True, exist_ok=True)
        for child in self.path.iterdir():
            if child.name == "work" and keep_work:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        self.work.mkdir(exist_ok=True)
        self._written = {}
        self.save_text("config.yaml", yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True))

    def finish(self, metrics: dict[str, Any]) -> None:
        """Write ``metrics.json`` and then, last, the completion marker."""
        self.save_json("metrics.json", metrics)
        marker = {"completed_at": _now(), "files": dict(sorted(self._written.items()))}
        atomic_write_text(self.path / COMPLETE, json.dumps(marker, indent=2) + "\n")

    def fail(self, exc: BaseException) -> None:
        """Record why the cell failed (no marker: the cell is redone on the next run)."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        atomic_write_text(self.path / "error.txt", f"{_now()}\n{text}")

    # -- files -----------------------------------------------------------------------------
    def save_bytes(self, name: str, data: bytes) -> Path:
        """Write one file of the record (atomically); ``COMPLETE`` will vouch for these bytes."""
        target = self.path / name
        atomic_write_bytes(target, data)
        self._written[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return target

    def save_text(self, name: str, text: str) -> Path:
        return self.save_bytes(name, text.encode("utf-8"))

    def save_json(self, name: str, obj: Any) -> Path:
        return self.save_text(name, json.dumps(_plain(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")

    def save_frame(self, name: str, df: pd.DataFrame) -> Path:
        buf = io.StringIO()
        df.to_csv(buf, index=False, lineterminator="\n")
        return self.save_text(name, buf.getvalue())

    def save_predictions(self, split: str, df: pd.DataFrame) -> Path:
        clean = validate_predictions(df, where=f"predictions for {split}")
        cols = list(PREDICTION_COLUMNS) + [c for c in clean.columns if c not in PREDICTION_COLUMNS]
        return self.save_frame(f"predictions_{split}.csv", clean[cols])


def read_predictions(cell: str | Path, split: str) -> pd.DataFrame:
    return pd.read_csv(Path(cell) / f"predictions_{split}.csv", dtype={"img_id": str})


def read_metrics(cell: str | Path) -> dict[str, Any]:
    return json.loads((Path(cell) / "metrics.json").read_text())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(obj: Any) -> Any:
    """Convert numpy scalars/arrays, Paths and NaN to JSON/YAML-safe plain values."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, np.ndarray):
        return [_plain(v) for v in obj.tolist()]
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if hasattr(obj, "model_dump"):
        return _plain(obj.model_dump())
    return obj
