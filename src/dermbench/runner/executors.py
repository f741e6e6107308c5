"""Where the cells of a grid run: in this process, in N local worker processes, or on Ray.

Every executor calls :func:`dermbench.runner.cell.execute_cell` for each cell, so the skip/redo
semantics are the same everywhere: a complete cell is skipped (``force`` redoes it), a partial
or failed one is redone, and a failing cell is recorded in its folder while the grid goes on.
Results always go to the runs folder (on a cluster: shared storage every node can write); the
driver only collects each cell's status.

No home-made scheduler: the local pool is :class:`concurrent.futures.ProcessPoolExecutor`
(spawn context, so no forked torch state), and Ray places each cell as a task with the CPU/GPU
request from the config.

GPUs (:mod:`dermbench.runner.placement` has the rule): each local pool worker gets its own
``CUDA_VISIBLE_DEVICES`` (round-robin over the GPUs this machine shows), and a Ray task of a GPU cell
runs in a worker process that exits after it (``max_calls=1``), so no cell inherits the GPU memory
or the CUDA context of the one before.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ExecutorError
from ..runs.cell import CellSpec
from ..runs.record import is_complete
from ..utils.console import get_logger
from .cell import CellResult, changed_fields, execute_cell
from .grid import PlannedCell
from .placement import place_cells, pool_gpu_assignment

log = get_logger("runner")

OnResult = Callable[[CellResult], None]


@dataclass
class GridSummary:
    """What a grid run did, cell by cell."""

    results: list[CellResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[CellResult]:
        return [r for r in self.results if r.status == "failed"]

    def format(self) -> str:
        lines = [f"grid finished in {self.seconds:.1f}s: {self.count('done')} done, "
                 f"{self.count('failed')} failed, {self.count('skipped')} skipped (already complete)"]
        for r in self.failed:
            first = (r.error or "").strip().splitlines()[0] if r.error else "see error.txt"
            lines.append(f"  FAILED {r.spec.key}: {first}\n         details: {r.path / 'error.txt'}")
        return "\n".join(lines)


def run_cells(cells: list[PlannedCell], runs_root: str | Path, *, executor: str = "local", workers: int = 1,
              address: str | None = None, force: bool = False, imports: Iterable[str] = (),
              on_result: OnResult | None = None) -> GridSummary:
    """Run ``cells`` with the chosen executor and return the summary (never raises for a cell)."""
    runs_root = Path(runs_root).absolute()
    imports = list(imports)
    t0 = time.perf_counter()
    if executor == "local":
        place_cells(cells, executor="local", workers=workers, gpus=len(_local_gpus(cells)))
    if executor == "ray":
        results = run_ray(cells, runs_root, force=force, address=address, imports=imports, on_result=on_result)
    elif executor == "local" and workers <= 1:
        results = run_in_process(cells, runs_root, force=force, on_result=on_result)
    elif executor == "local":
        results = run_process_pool(cells, runs_root, workers=workers, force=force, imports=imports,
                                   on_result=on_result)
    else:
        raise ExecutorError(f"unknown executor {executor!r}; use local or ray")
    order = {id(c.spec): i for i, c in enumerate(cells)}
    results.sort(key=lambda r: order.get(id(r.spec), 0))
    return GridSummary(results, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# local
# ---------------------------------------------------------------------------------------------
def run_in_process(cells: list[PlannedCell], runs_root: Path, *, force: bool = False,
                   on_result: OnResult | None = None) -> list[CellResult]:
    """Run the cells one after the other. A cell another process is computing (another
    ``dermbench run`` on the same runs folder) is left for the end, then waited for: two runs
    share the grid's work instead of computing the same cells."""
    results = []
    deferred = []

    def emit(result: CellResult) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    for cell in cells:
        result = execute_cell(cell.spec, runs_root, force=force, wait=False)
        if result.status == "busy":
            log.info("%s: %s is computing this cell; coming back to it at the end", cell.key, result.error)
            deferred.append(cell)
            continue
        emit(result)
    for cell in deferred:
        emit(execute_cell(cell.spec, runs_root, force=force, wait=True))
    return results


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive the ``dermbench run`` that started it: a driver killed with SIGKILL
    (or by the out-of-memory killer) would otherwise leave its workers running queued cells, racing
    the re-run that redoes those same cells in the same folders. Linux: ask the kernel to kill this
    process when its parent dies (PR_SET_PDEATHSIG); other systems keep the default behaviour."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _local_gpus(cells: list[PlannedCell]) -> list[str]:
    """The CUDA GPUs of this machine (``CUDA_VISIBLE_DEVICES`` entries); not counted (no torch
    import) when every cell runs on the CPU anyway."""
    if all(c.spec.device == "cpu" for c in cells):
        return []
    from ..utils.device import visible_gpus

    return visible_gpus()


def _worker_init(imports: list[str], threads: int, parent_pid: int | None = None, quiet: bool = False,
                 gpu_slots: list[str] | None = None, counter: Any = None) -> None:
    """Runs once in each spawned worker: tie it to its parent, take its own GPU (the next of
    ``gpu_slots``, counted across the pool's workers by ``counter``) before anything can touch CUDA,
    size the math libraries' thread pools, set up the console as the driver's, load plugins."""
    from ..utils.console import configure

    if parent_pid is not None:
        _die_with_parent(parent_pid)
    if gpu_slots:
        with counter.get_lock():
            ordinal = int(counter.value)
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_slots[ordinal % len(gpu_slots)]
    configure(quiet=quiet)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    from .config import import_plugins

    import_plugins(imports)


def _run_one(spec: dict[str, Any], runs_root: str, force: bool, imports: list[str], *after: Any) -> dict[str, Any]:
    """Run one cell in a worker (pool or Ray task); returns a picklable status. ``after`` holds the
    results of cells this one waited for (Ray resolves them before the task starts)."""
    from ..utils.console import configure
    from .config import import_plugins

    cell = CellSpec.from_dict(spec)
    configure(quiet=cell.quiet)  # a Ray task's process has not been set up by this driver
    import_plugins(imports)
    result = execute_cell(cell, runs_root, force=force)
    return {"status": result.status, "seconds": result.seconds, "error": result.error, "path": str(result.path),
            "missing_weights": result.missing_weights, "host": os.uname().nodename if hasattr(os, "uname") else ""}


#: What :func:`_run_with_cached_embeddings` answers when the cell needs its GPU after all.
NEEDS_GPU = "needs_gpu"


def _recorded_precision(cell_path: Any) -> str | None:
    """The precision a complete probe cell's embeddings were computed in (its record's provenance)."""
    from ..runs.record import read_metrics

    try:
        return str(read_metrics(Path(cell_path))["provenance"]["dtype"])
    except Exception:
        return None


def _run_with_cached_embeddings(spec: dict[str, Any], runs_root: str, force: bool, imports: list[str],
                                leader: Any) -> dict[str, Any]:
    """A probe cell after the first of its embedding group (``leader``: that cell's status), run by Ray
    with no GPU: when the leader completed and every embedding this cell needs is cached in the
    precision the leader computed them in, the cell fits its head on the CPU (it never builds its
    backbone); otherwise it answers :data:`NEEDS_GPU` without touching its folder, and the driver
    submits it again with its GPU request."""
    from ..paradigms.probe.cell import EMBEDDINGS_PRECISION_ENV, embeddings_cached
    from ..utils.console import configure
    from .config import import_plugins

    cell = CellSpec.from_dict(spec)
    configure(quiet=cell.quiet)
    import_plugins(imports)
    done = isinstance(leader, dict) and leader.get("status") == "done"
    precision = _recorded_precision(leader.get("path")) if done else None
    try:
        cached = precision is not None and embeddings_cached(cell, precision)
    except Exception:  # an unreadable dataset or cache: the cell runs as planned and says what is wrong
        cached = False
    if not cached:
        return {"status": NEEDS_GPU}
    os.environ[EMBEDDINGS_PRECISION_ENV] = str(precision)
    try:
        return _run_one({**spec, "device": "cpu"}, runs_root, force, imports)
    finally:
        os.environ.pop(EMBEDDINGS_PRECISION_ENV, None)


def _result_from(cell: PlannedCell, status: dict[str, Any]) -> CellResult:
    return CellResult(cell.spec, Path(status["path"]), status["status"], float(status["seconds"]), status["error"],
                      missing_weights=bool(status.get("missing_weights")))


def run_process_pool(cells: list[PlannedCell], runs_root: Path, *, workers: int, force: bool = False,
                     imports: list[str] | None = None, on_result: OnResult | None = None) -> list[CellResult]:
    """Run cells in ``workers`` spawned processes.

    A worker that dies (killed, out of memory) breaks the whole pool. The cells that were running
    then are retried one at a time, each alone in a fresh worker, so the cell that kills its worker
    is found and recorded as failed while the innocent ones complete; queued cells go on in parallel.
    """
    imports = list(imports or [])
    threads = max(1, (os.cpu_count() or 1) // workers)
    gpu_slots = pool_gpu_assignment(cells, workers, _local_gpus(cells))  # ExecutorError: more workers than GPUs
    results: list[CellResult] = []

    def emit(result: CellResult) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    remaining = list(cells)
    while remaining:
        suspects, queued = _pool_round(remaining, runs_root, workers, force, imports, threads, emit, gpu_slots)
        if suspects or queued:
            log.warning("a worker process died; retrying %d running cell(s) one at a time and %d queued cell(s)",
                        len(suspects), len(queued))
        if not suspects and len(queued) == len(remaining):  # no cell even started: workers die on start-up
            for cell in queued:
                emit(_record_failure(cell, runs_root, RuntimeError(
                    "worker processes die before running any cell (see the messages above)")))
            break
        for cell in suspects:
            running, not_started = _pool_round([cell], runs_root, 1, force, imports, threads, emit, gpu_slots)
            for culprit in running + not_started:
                emit(_record_failure(culprit, runs_root, RuntimeError(
                    "the worker process died while running this cell, also when it ran alone "
                    "(killed, out of memory, or a crash in native code)")))
        remaining = queued
    return results


def _pool_round(cells: list[PlannedCell], runs_root: Path, workers: int, force: bool, imports: list[str],
                threads: int, emit: OnResult, gpu_slots: list[str] | None = None
                ) -> tuple[list[PlannedCell], list[PlannedCell]]:
    """One pool over ``cells``; returns the cells lost to a broken pool as (running, queued)."""
    ctx = multiprocessing.get_context("spawn")
    round_start = time.time()
    broken: list[PlannedCell] = []
    quiet = any(c.spec.quiet for c in cells)
    counter = ctx.Value("i", 0)  # worker ordinal -> its GPU slot
    with ProcessPoolExecutor(max_workers=min(workers, len(cells)), mp_context=ctx, initializer=_worker_init,
                             initargs=(imports, threads, os.getpid(), quiet, gpu_slots, counter)) as pool:
        futures = {pool.submit(_run_one, c.spec.to_dict(), str(runs_root), force, imports): c for c in cells}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                cell = futures[fut]
                try:
                    emit(_result_from(cell, fut.result()))
                except BrokenProcessPool:
                    broken.append(cell)
                except Exception as exc:  # e.g. an unpicklable error: record it, keep going
                    emit(_record_failure(cell, runs_root, exc))
    running, queued = [], []
    for cell in broken:
        path = cell.spec.path(runs_root)
        if _started_since(path, round_start):
            if is_complete(path):  # it finished just before its pool went down
                emit(CellResult(cell.spec, path, "done"))
            else:
                running.append(cell)
        else:
            queued.append(cell)
    order = {id(c): i for i, c in enumerate(cells)}
    return sorted(running, key=lambda c: order[id(c)]), sorted(queued, key=lambda c: order[id(c)])


def _started_since(path: Path, since: float) -> bool:
    """Whether a cell began (wrote its config.yaml) after ``since``: it was in flight, not queued."""
    try:
        return (path / "config.yaml").stat().st_mtime >= since - 1.0
    except OSError:
        return False


def _record_failure(cell: PlannedCell, runs_root: Path, exc: BaseException) -> CellResult:
    from ..runs.record import RunRecorder

    path = cell.spec.path(runs_root)
    if is_complete(path):  # it finished before its worker went away
        return CellResult(cell.spec, path, "done")
    path.mkdir(parents=True, exist_ok=True)
    RunRecorder(path).fail(exc)
    return CellResult.failure(cell.spec, path, exc)


# ---------------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------------
def _import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError("the Ray executor needs the optional extra: pip install 'dermbench[ray]' "
                            "(or run with --executor local)") from None
    return ray


def _cache_group(spec: CellSpec) -> tuple | None:
    """Probe cells of one backbone and dataset share the embedding cache: the first one extracts
    the embeddings and the others (heads, label fractions) wait for it instead of extracting the
    same embeddings in parallel. Other cells run independently."""
    if spec.paradigm != "probe":
        return None
    settings = spec.settings
    return (spec.experiment, spec.model, spec.dataset, settings.get("image_size"), settings.get("resize"),
            settings.get("weights"), settings.get("train_views"), repr(settings.get("backbone_options")))


def _check_feasible(ray, cells: list[PlannedCell], *, strict: bool) -> None:
    """A task asking for more CPUs/GPUs than the cluster has would wait forever: say so instead.
    On a joined cluster (which may autoscale) this is a warning; on a local instance an error."""
    total = ray.cluster_resources()
    problems = []
    for kind, key in (("num_gpus", "GPU"), ("num_cpus", "CPU")):
        need = max(getattr(c.resources, kind) for c in cells)
        have = float(total.get(key, 0.0))
        if need > have:
            problems.append(f"a cell asks for {kind}={need:g} but the Ray cluster has {have:g} {key}(s)")
    if problems:
        message = ("; ".join(problems) + ". Lower `resources` in the config (e.g. num_gpus: 0 on a CPU machine) "
                   "or join a cluster that has them (--address auto)")
        if strict:
            raise ExecutorError(message)
        log.warning("%s; tasks wait until the cluster provides them", message)


def _remote_functions(ray) -> tuple[Any, Any]:
    """The cell task for CPU cells and for GPU cells. A GPU cell's worker process exits after the
    task (``max_calls=1``): Ray's own one-task-per-GPU-worker default applies only to functions
    declared with ``num_gpus``, and ``.options()`` cannot set ``max_calls``, so it is declared here.
    Otherwise a reused worker keeps the CUDA context and cached memory of the GPU it first used."""
    return ray.remote(_run_one), ray.remote(max_calls=1)(_run_one)


def run_ray(cells: list[PlannedCell], runs_root: Path, *, force: bool = False, address: str | None = None,
            imports: list[str] | None = None, on_result: OnResult | None = None) -> list[CellResult]:
    """Each cell is a Ray task with ``num_cpus``/``num_gpus`` (and ``memory``) from the config.

    ``address``: ``None``/``"local"`` starts a local Ray instance, ``"auto"`` joins the cluster this
    node belongs to, ``ray://host:10001`` connects a client. The task writes the cell's record to
    ``runs_root``, which must be storage every node sees. Complete cells are skipped by the driver
    before scheduling (and again by the task, in case another driver finished them meanwhile).
    """
    ray = _import_ray()
    imports = list(imports or [])
    results: list[CellResult] = []
    todo = []
    for cell in cells:
        path = cell.spec.path(runs_root)
        if not force and is_complete(path) and not changed_fields(cell.spec, path):
            result = CellResult(cell.spec, path, "skipped")
            results.append(result)
            if on_result:
                on_result(result)
        else:
            todo.append(cell)
    if not todo:
        return results

    started_here = False
    if not ray.is_initialized():
        init_kw: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
        if address and address != "local":
            init_kw["address"] = address
        else:
            init_kw.update(include_dashboard=False, num_cpus=os.cpu_count() or 1)
        try:
            ray.init(**init_kw)
        except Exception as exc:
            raise ExecutorError(f"could not start or join Ray (address={address or 'local'}): {exc}") from exc
        started_here = True
    try:
        cluster = ray.cluster_resources()
        place_cells(todo, executor="ray", gpus=int(float(cluster.get("GPU", 0.0))), cpus=int(float(cluster.get("CPU", 1.0))))
        _check_feasible(ray, todo, strict=started_here and not (address and address != "local"))
        cpu_task, gpu_task = _remote_functions(ray)
        cached_task = ray.remote(_run_with_cached_embeddings)

        def submit(cell: PlannedCell, after: list[Any]) -> Any:
            opts: dict[str, Any] = {"num_cpus": cell.resources.num_cpus, "num_gpus": cell.resources.num_gpus}
            if cell.resources.memory_gb:
                opts["memory"] = int(cell.resources.memory_gb * 1024 ** 3)
            if after and cell.resources.num_gpus > 0:
                # the leader embeds; this cell fits its head on cached vectors without holding a GPU
                ref = cached_task.options(**{**opts, "num_gpus": 0}).remote(
                    cell.spec.to_dict(), str(runs_root), force, imports, after[0])
            else:
                task = gpu_task if cell.resources.num_gpus > 0 else cpu_task
                ref = task.options(**opts).remote(cell.spec.to_dict(), str(runs_root), force, imports, *after)
            refs[ref] = cell
            return ref

        refs: dict[Any, PlannedCell] = {}
        first_of_group: dict[tuple, Any] = {}
        for cell in todo:
            group = _cache_group(cell.spec)
            ref = submit(cell, [first_of_group[group]] if group in first_of_group else [])
            if group is not None:
                first_of_group.setdefault(group, ref)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                cell = refs[ref]
                try:
                    status = ray.get(ref)
                    if status.get("status") == NEEDS_GPU:  # not cached after all: again, with its GPU
                        pending.append(submit(cell, []))
                        continue
                    result = _result_from(cell, status)
                except Exception as exc:  # the task itself died (node lost, out of memory)
                    result = _record_failure(cell, runs_root, exc)
                results.append(result)
                if on_result:
                    on_result(result)
    finally:
        if started_here:
            ray.shutdown()
    return results
