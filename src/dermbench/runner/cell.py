"""Running one cell: a :class:`~dermbench.runs.cell.CellSpec` -> a complete run record (or a recorded failure).

Every paradigm implements ``run_cell(spec: CellSpec, recorder: RunRecorder) -> dict`` in
``dermbench/paradigms/<paradigm>/cell.py``; it ends by calling
:func:`dermbench.runs.evaluate.finalize_cell`, which writes the completion marker. This module
is the only caller of ``run_cell``: the standalone commands (``dermbench probe`` ...), the grid
runner and the Ray executor all go through :func:`execute_cell`, so skip/redo semantics are the
same everywhere.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from ..runs.cell import CellSpec
from ..runs.record import RunRecorder, is_complete
from ..utils.console import get_logger

log = get_logger("runner")


@dataclass
class CellResult:
    spec: CellSpec
    path: Path
    status: str           # "done" | "skipped" | "failed"
    seconds: float = 0.0
    error: str = ""


def execute_cell(spec: CellSpec, runs_root: str | Path, *, force: bool = False) -> CellResult:
    """Run one cell unless it is already complete; a failure is recorded, not raised."""
    from ..paradigms import PARADIGMS

    path = spec.path(runs_root)
    if is_complete(path) and not force:
        changed = changed_fields(spec, path)
        if not changed:
            return CellResult(spec, path, "skipped")
        log.info("%s: complete, but recorded with other %s; redoing it", path, ", ".join(changed))
    recorder = RunRecorder(path)
    recorder.begin(spec.to_dict(), keep_work=not force)
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
        return CellResult(spec, path, "failed", time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
    return CellResult(spec, path, "done", time.perf_counter() - t0)


#: Fields of a cell's config that change its results. A cell's folder is named by its identity
#: (paradigm, model, variant, curve point), dataset and seed only, so a complete cell recorded with
#: other values of these holds the results of another config: it is redone, not skipped.
RESULT_FIELDS = ("settings", "threshold_policy", "n_boot", "strict")


def changed_fields(spec: CellSpec, path: str | Path) -> list[str]:
    """The :data:`RESULT_FIELDS` whose value in the cell's recorded ``config.yaml`` differs from
    ``spec`` (``settings.<key>`` per setting). Settings keys only one side has are not compared, so
    a setting added to a paradigm later does not invalidate older records; an unreadable record
    compares equal (its marker is what says it is complete)."""
    import yaml

    from ..runs.record import _plain

    try:
        recorded = yaml.safe_load((Path(path) / "config.yaml").read_text(encoding="utf-8"))
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
            changed += [f"settings.{k}" for k in new if k in old and old[k] != new[k]]
        elif old != new:
            changed.append(key)
    return changed


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
