"""One cell of the grid: (paradigm, model, dataset, seed [, head/prompt]) -> a run record.

Every paradigm implements ``run_cell(spec: CellSpec, recorder: RunRecorder) -> dict`` in
``dermbench/paradigms/<paradigm>/cell.py``; it ends by calling
:func:`dermbench.runs.evaluate.finalize_cell`, which writes the completion marker. This module
is the only caller of ``run_cell``: the standalone commands (``dermbench probe`` ...), the grid
runner and the Ray executor all go through :func:`execute_cell`, so skip/redo semantics are the
same everywhere.
"""

from __future__ import annotations

import time
import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..runs.record import RunRecorder, cell_dir, is_complete


@dataclass
class CellSpec:
    """Everything a paradigm needs to run one cell. ``settings`` is the paradigm's validated
    settings (a plain dict of its pydantic settings model, see ``paradigms/<p>/settings.py``)."""

    experiment: str
    paradigm: str
    model: str            # registry name (finetune model, probe backbone, zeroshot model)
    dataset: str          # path of a contract dataset folder
    seed: int = 42
    variant: str = ""     # e.g. probe head, prompt set, balancing mode: part of the cell's identity
    settings: dict[str, Any] = field(default_factory=dict)
    threshold_policy: str = "fixed:0.5"
    n_boot: int = 1000
    device: str = "auto"
    strict: bool = False
    quiet: bool = False
    threads: int = 0      # torch intra-op CPU threads for this cell; 0 = the library default

    # CPU float results depend on how reductions are split across threads, so a grid fixes the
    # thread count per cell (from its ``resources.num_cpus``): then the same config and seed give
    # identical metrics in process, in a worker pool and on Ray.

    @property
    def model_label(self) -> str:
        """Folder/report name of the model: the model plus its variant (``resnet18+balanced``)."""
        return f"{self.model}+{self.variant}" if self.variant else self.model

    @property
    def dataset_name(self) -> str:
        return Path(self.dataset).name

    def path(self, runs_root: str | Path) -> Path:
        return cell_dir(runs_root, self.experiment, self.paradigm, self.model_label, self.dataset_name, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        if not spec.quiet:
            print(f"{path}: complete, but recorded with other {', '.join(changed)}; redoing it", flush=True)
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


#: Fields of a cell's config that change its results. A cell's folder is named by paradigm, model,
#: variant, dataset and seed only, so a complete cell recorded with other values of these holds the
#: results of another config: it is redone, not skipped.
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
