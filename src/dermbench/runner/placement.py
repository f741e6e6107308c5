"""What each cell of a grid gets: CPUs, GPUs and the device it runs on — one rule for every executor.

The rule (applied by :func:`place_cells` before a grid runs, and shown by ``dermbench run --dry-run``):

1. **Resources not given** (no ``resources:`` at the top of the config nor in the block): a cell asks
   for 1 CPU, and for 1 GPU when it runs a model on this side (not a model server), its ``device``
   is not ``cpu`` and there are CUDA GPUs (visible here, or in the Ray cluster). Such a GPU cell
   also gets its share of the CPUs (:func:`cpu_share`: the CPUs over the GPU cells that run at
   once), so its data loader has workers to keep the GPU fed. A warning says so once: set
   ``resources`` to size the cells yourself.
2. **A cell that asks for no GPU runs on the CPU** when CUDA GPUs exist: ``device: auto`` becomes
   ``cpu``. Otherwise ``auto`` would take ``cuda:0`` outside any accounting (Ray 2.60 leaves every GPU
   visible to a task that asked for none; a local worker sees them all). An explicit ``cuda`` with
   ``num_gpus: 0`` is refused under Ray and a worker pool, and allowed (with a note) in process.
3. **A cell that asks for GPUs** runs on the GPU its worker was given: Ray sets the task's
   ``CUDA_VISIBLE_DEVICES``, a local worker pool gives each worker its own
   (:func:`pool_gpu_assignment`), so ``auto`` means ``cuda`` there; ``cuda:N`` is refused (N would
   index the worker's own GPUs). In process the configured device is used as it is.
4. **GPU cells and no GPU** (local executors): they run where ``device`` resolves (``auto``: the
   CPU), with a warning.

Nothing here imports torch; the caller counts the GPUs (:func:`dermbench.utils.device.visible_gpus`
locally, the cluster's resources under Ray).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from ..errors import ExecutorError
from ..utils.console import get_logger

if TYPE_CHECKING:
    from ..runs.cell import CellSpec
    from .grid import PlannedCell

log = get_logger("runner")


def runs_a_model_here(spec: CellSpec) -> bool:
    """Whether the cell computes with a model in its own process (False: a model server answers)."""
    if spec.paradigm != "zeroshot":
        return True
    try:
        from ..models import resolve
        from ..models.frameworks import FRAMEWORKS

        return FRAMEWORKS[resolve("zeroshot", spec.model).framework].local
    except Exception:  # an unknown name fails in the cell itself, with its own message
        return True


def _distributes_gpus(executor: str, workers: int) -> bool:
    return executor == "ray" or (executor == "local" and workers > 1)


def cpu_share(cpus: int, gpus: int, executor: str, workers: int) -> int:
    """CPUs for a GPU cell whose config sets no resources: the CPUs (here, or in the Ray cluster)
    over the GPU cells that run at once (one in process, one per worker up to the GPUs in a pool,
    one per GPU under Ray), at least 1."""
    if executor == "ray":
        at_once = gpus
    else:  # local: one cell in process, else one per worker up to the GPUs
        at_once = min(gpus, workers) if workers > 1 else 1
    return max(1, int(cpus) // max(1, at_once))


def place_cells(cells: list[PlannedCell], *, executor: str = "local", workers: int = 1, gpus: int = 0,
                cpus: int | None = None) -> list[str]:
    """Resolve every cell's resources and device in place (rules in the module docstring); returns
    the notes worth printing (each is logged as a warning too). ``gpus`` / ``cpus``: CUDA GPUs and
    CPUs available to the grid (here, or in the Ray cluster; ``cpus`` defaults to this machine's)."""
    import os

    from ..runs.block import Resources

    notes: list[str] = []
    defaulted = 0
    share = cpu_share(cpus if cpus is not None else (os.cpu_count() or 1), gpus, executor, workers)
    for cell in cells:
        if cell.resources_given:
            continue
        wants_gpu = gpus > 0 and cell.spec.device != "cpu" and runs_a_model_here(cell.spec)
        cell.resources = Resources(num_cpus=share if wants_gpu else cell.resources.num_cpus,
                                   num_gpus=1 if wants_gpu else 0)
        defaulted += wants_gpu
    if defaulted:
        notes.append(f"the config sets no resources: {defaulted} cell(s) that run a model here ask for 1 GPU and "
                     f"{share} CPU(s) each ({gpus} CUDA GPU(s) available), other cells 1 CPU; set "
                     f"`resources: {{num_cpus: N, num_gpus: G}}` (top level or per block) to size them")
    distributed = _distributes_gpus(executor, workers)
    cpu_forced = 0
    for cell in cells:
        device = cell.spec.device
        asks_gpu = cell.resources.num_gpus > 0
        if not asks_gpu:
            if gpus > 0 and device == "auto":
                cell.spec = dataclasses.replace(cell.spec, device="cpu")
                cpu_forced += 1
            elif device.startswith("cuda") and distributed:
                raise ExecutorError(f"{cell.key}: device {device!r} but resources.num_gpus is 0, so "
                                    f"{'Ray' if executor == 'ray' else 'the worker pool'} reserves no GPU for it; "
                                    f"ask for num_gpus: 1 (or a fraction), or use device auto/cpu")
        elif distributed and device.startswith("cuda:"):
            raise ExecutorError(f"{cell.key}: device {device!r} names one GPU, but with "
                                f"{'Ray' if executor == 'ray' else f'{workers} local workers'} each worker sees only "
                                f"the GPU(s) it is given (as cuda:0); use device cuda or auto")
        elif distributed and gpus > 0 and device == "auto":
            cell.spec = dataclasses.replace(cell.spec, device="cuda")
    if cpu_forced:
        log.debug("%d cell(s) ask for no GPU and run on the CPU", cpu_forced)
    if gpus == 0 and executor == "local" and any(c.resources.num_gpus > 0 for c in cells):
        notes.append("cells ask for GPUs but torch sees no CUDA GPU here: they run where their device resolves "
                     "(auto: the CPU)")
    for note in notes:
        log.warning("%s", note)
    return notes


def gpus_per_worker(cells: list[PlannedCell]) -> float:
    """The largest GPU request of the GPU cells (a fraction lets cells share a GPU)."""
    return max((c.resources.num_gpus for c in cells if c.resources.num_gpus > 0), default=0.0)


def pool_gpu_assignment(cells: list[PlannedCell], workers: int, gpus: list[str]) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` of each local worker, round-robin over ``gpus``; None when no cell
    asks for a GPU (or there is none: the cells then run on the CPU, rule 4).

    A cell asking ``num_gpus`` g < 1 may share its GPU with ``floor(1 / g)`` cells; more workers than
    the GPUs hold is an :class:`ExecutorError` (they would silently share one GPU's memory)."""
    need = gpus_per_worker(cells)
    if need <= 0 or not gpus:
        return None
    per_gpu = max(1, math.floor(1 / need + 1e-9)) if need < 1 else 1
    if need > 1:
        log.warning("cells ask for num_gpus=%g, but a dermbench cell uses one device: each local worker gets one "
                    "GPU", need)
    capacity = len(gpus) * per_gpu
    n = min(workers, len(cells))
    if n > capacity:
        raise ExecutorError(f"--workers {workers}: the grid's GPU cells ask for num_gpus={need:g} each and this "
                            f"machine has {len(gpus)} GPU(s) ({', '.join(gpus)}), room for {capacity} such cell(s) "
                            f"at once; use --workers {capacity}, lower num_gpus to share a GPU "
                            f"(e.g. {1 / max(2, math.ceil(n / len(gpus))):g}), or run them with --executor ray")
    return [gpus[k % len(gpus)] for k in range(n)]
