"""Where the cells of a grid run on a GPU machine, checked without one: Ray gets ``max_calls=1``
for GPU cells (a worker process is never reused across GPU cells), each local pool worker gets its
own ``CUDA_VISIBLE_DEVICES`` (or the grid is refused when the GPUs cannot hold the workers), a grid
without ``resources`` asks for a GPU per model cell when there are GPUs, a cell asking for no GPU
runs on the CPU, and ``--dry-run`` says what each cell gets."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from dermbench.errors import ExecutorError
from dermbench.runner import executors
from dermbench.runner.config import parse_config
from dermbench.runner.grid import PlannedCell, expand_grid
from dermbench.runner.placement import place_cells, pool_gpu_assignment
from dermbench.runs.block import Resources
from dermbench.runs.cell import CellSpec

TESTS = Path(__file__).resolve().parent


def _cell(paradigm="finetune", model="resnet18", num_gpus=1.0, device="auto", given=True, **settings) -> PlannedCell:
    spec = CellSpec("e", paradigm, model, f"/data/{model}-{paradigm}", device=device, settings=dict(settings))
    return PlannedCell(spec, Resources(num_cpus=2, num_gpus=num_gpus), resources_given=given)


# --- 1. Ray: GPU cells never reuse a worker process ------------------------------------------------

class _FakeRay:
    """Records what run_ray asks of Ray: how each remote function was declared and the options of
    every task; tasks "finish" at once."""

    def __init__(self, gpus: float = 2, answer=None):
        self.gpus = gpus
        self.declared: list[dict] = []
        self.submitted: list[tuple] = []  # (declaration, options, spec, function name, after)
        self.answer = answer or (lambda function, spec: "done")

    def is_initialized(self):
        return False

    def init(self, **kw):
        self.init_kw = kw

    def shutdown(self):
        pass

    def cluster_resources(self):
        return {"CPU": 16.0, "GPU": float(self.gpus)}

    def remote(self, *args, **declaration):
        if args and callable(args[0]):
            return _FakeRemote(self, args[0], {})
        return lambda fn: _FakeRemote(self, fn, declaration)

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.status


class _Ref:
    def __init__(self, status):
        self.status = status


class _FakeRemote:
    def __init__(self, ray, fn, declaration):
        self.ray, self.fn, self.declaration = ray, fn, declaration
        ray.declared.append(declaration)

    def options(self, **opts):
        remote = self

        class _Bound:
            def remote(self, spec, runs_root, force, imports, *after):
                remote.ray.submitted.append((remote.declaration, opts, spec, remote.fn.__name__, after))
                status = remote.ray.answer(remote.fn.__name__, spec)
                return _Ref({"status": status, "seconds": 0.0, "error": "", "path": f"{runs_root}/{spec['model']}"})
        return _Bound()


def test_ray_gpu_cells_run_in_a_worker_that_exits_after_them(monkeypatch, tmp_path):
    fake = _FakeRay(gpus=2)
    monkeypatch.setattr(executors, "_import_ray", lambda: fake)
    cells = [_cell(model="convnext_tiny", num_gpus=1), _cell(paradigm="zeroshot", model="ollama:gemma3:27b",
                                                                 num_gpus=0),
             _cell(model="resnet18", num_gpus=0.5)]
    summary = executors.run_cells(cells, tmp_path, executor="ray")
    assert summary.count("done") == 3
    by_model = {spec["model"]: (declaration, opts, spec) for declaration, opts, spec, _, _ in fake.submitted}
    for model, gpus in (("convnext_tiny", 1), ("resnet18", 0.5)):
        declaration, opts, spec = by_model[model]
        assert declaration == {"max_calls": 1} and opts["num_gpus"] == gpus and opts["num_cpus"] == 2
        assert spec["device"] == "cuda"                       # the GPU Ray assigns, seen as cuda:0
    declaration, opts, spec = by_model["ollama:gemma3:27b"]
    assert declaration == {} and opts["num_gpus"] == 0
    assert spec["device"] == "cpu"                            # asked for no GPU: not cuda:0 outside Ray's books


def test_ray_probe_cells_after_the_first_of_a_backbone_hold_no_gpu(monkeypatch, tmp_path):
    """The first probe cell of a backbone embeds on its GPU; the others fit their heads on the cached
    vectors with num_gpus 0 (after the first one, whose result they receive); one that finds its
    vectors missing answers needs_gpu and is submitted again with its GPU."""
    def answer(function, spec):
        return "needs_gpu" if function == "_run_with_cached_embeddings" and spec["settings"]["head"] == "svm" \
            else "done"

    fake = _FakeRay(gpus=1, answer=answer)
    monkeypatch.setattr(executors, "_import_ray", lambda: fake)
    cells = [_cell(paradigm="probe", model="dinov2_giant", num_gpus=1, head=head) for head in ("rf", "knn", "svm")]
    summary = executors.run_cells(cells, tmp_path, executor="ray")
    assert summary.count("done") == 3
    calls = [(spec["settings"]["head"], function, opts["num_gpus"], len(after))
             for _, opts, spec, function, after in fake.submitted]
    assert calls == [("rf", "_run_one", 1, 0),                           # the leader embeds on its GPU
                     ("knn", "_run_with_cached_embeddings", 0, 1),      # after it, without a GPU
                     ("svm", "_run_with_cached_embeddings", 0, 1),
                     ("svm", "_run_one", 1, 0)]                          # not cached: again, with its GPU


def test_a_probe_cell_on_cached_vectors_runs_without_gpu_or_answers_needs_gpu(tmp_path, monkeypatch):
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.paradigms.probe import cell as probe_cell
    from dermbench.paradigms.probe.settings import ProbeSettings
    from dermbench.runs.record import read_metrics

    synth = make_synthetic_dataset(tmp_path / "synth", n=30, size=32, progress=False)

    def spec(head):
        settings = ProbeSettings(head=head, weights="random", image_size=32).model_dump(mode="json")
        return CellSpec("e", "probe", "timm:resnet10t", str(synth), device="cuda", n_boot=10, quiet=True,
                        settings=settings)

    leader = executors._run_one({**spec("logreg").to_dict(), "device": "cpu"}, str(tmp_path / "runs"), False, [])
    assert leader["status"] == "done", leader["error"]
    monkeypatch.setattr(probe_cell, "build_embedder", lambda *a, **k: pytest.fail("the backbone was built"))
    follower = executors._run_with_cached_embeddings(spec("knn").to_dict(), str(tmp_path / "runs"), False, [], leader)
    assert follower["status"] == "done", follower["error"]
    record = read_metrics(Path(follower["path"]))
    assert record["extra"]["backbone"]["loaded"] is False and record["provenance"]["device"] == "cpu"
    assert "DERMBENCH_EMBEDDINGS_PRECISION" not in os.environ
    # a failed leader, or vectors computed in another precision: the cell needs its GPU after all
    assert executors._run_with_cached_embeddings(spec("svm").to_dict(), str(tmp_path / "runs"), False, [],
                                                 {**leader, "status": "failed"}) == {"status": "needs_gpu"}
    monkeypatch.setattr(executors, "_recorded_precision", lambda path: "autocast-bfloat16")
    assert executors._run_with_cached_embeddings(spec("svm").to_dict(), str(tmp_path / "runs"), False, [],
                                                 leader) == {"status": "needs_gpu"}
    assert not spec("svm").path(tmp_path / "runs").exists()  # its folder untouched


def test_the_gpu_remote_function_really_carries_max_calls():
    ray = pytest.importorskip("ray", reason="ray is an optional extra")
    cpu_task, gpu_task = executors._remote_functions(ray)
    assert gpu_task._max_calls == 1
    assert cpu_task._max_calls != 1
    # .options() keeps the declaration: what Ray exports for the worker is the function's _max_calls
    assert gpu_task.options(num_gpus=1, num_cpus=2) is not None and gpu_task._max_calls == 1


# --- 2. local worker pool: one GPU per worker ------------------------------------------------------

def test_pool_gpu_assignment_round_robin_or_refused():
    cells = [_cell(num_gpus=1) for _ in range(6)]
    assert pool_gpu_assignment(cells, 2, ["0", "1"]) == ["0", "1"]
    assert pool_gpu_assignment(cells, 4, ["0", "1", "2", "3"]) == ["0", "1", "2", "3"]
    with pytest.raises(ExecutorError, match=r"--workers 3: .* 2 GPU\(s\) \(0, 1\).*--workers 2"):
        pool_gpu_assignment(cells, 3, ["0", "1"])
    halves = [_cell(num_gpus=0.5) for _ in range(6)]
    assert pool_gpu_assignment(halves, 4, ["0", "1"]) == ["0", "1", "0", "1"]     # two cells share a GPU
    assert pool_gpu_assignment([_cell(num_gpus=0)], 4, ["0", "1"]) is None        # CPU cells: no assignment
    assert pool_gpu_assignment(cells, 4, []) is None                              # no GPU: rule 4


def test_worker_init_takes_the_next_gpu_before_anything_else(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    seen = []
    for _ in range(3):
        executors._worker_init([], 1, None, True, ["4", "7"], counter)
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["4", "7", "4"]


@pytest.mark.slow
def test_pool_workers_each_see_their_own_gpu(tmp_path, monkeypatch):
    """Two spawned workers, "GPUs" 3 and 5 (CUDA_VISIBLE_DEVICES of the driver: nothing touches
    CUDA): every cell runs with one of them, both are used, each worker keeps its own."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    from dermbench.paradigms import PARADIGMS

    monkeypatch.setattr(PARADIGMS, "_entries", dict(PARADIGMS._entries))  # the test paradigm does not stay
    monkeypatch.syspath_prepend(str(TESTS))
    import placement_plugin

    placement_plugin.register()

    cells = [PlannedCell(CellSpec("e", "gpuenv", f"m{i}", str(tmp_path / "d"), settings={"sleep": 0.4}),
                         Resources(num_cpus=1, num_gpus=1)) for i in range(4)]
    summary = executors.run_cells(cells, tmp_path / "runs", workers=2, imports=["placement_plugin"])
    assert summary.count("failed") == 4  # the plugin fails on purpose after recording
    records = [(c.spec.path(tmp_path / "runs") / "placement.txt").read_text().split() for c in cells]
    by_pid: dict[str, set[str]] = {}
    for pid, visible, device in records:
        by_pid.setdefault(pid, set()).add(visible)
        assert device == "cuda"
    assert sorted(v for vs in by_pid.values() for v in vs) == ["3", "5"]
    assert all(len(vs) == 1 for vs in by_pid.values())

    with pytest.raises(ExecutorError, match="--workers 3"):
        executors.run_cells(cells, tmp_path / "runs", workers=3, imports=["placement_plugin"])


# --- 4. resources omitted, CPU cells, what --dry-run says ----------------------------------------

def _config(tmp_path, **top):
    (tmp_path / "d").mkdir(exist_ok=True)
    raw = {"experiment": "p", "datasets": [{"path": str(tmp_path / "d")}], "device": "auto",
           "grid": [{"paradigm": "finetune", "models": ["resnet18"]},
                    {"paradigm": "zeroshot", "models": ["ollama:gemma3:27b"], "prompt_sets": ["simple"]}]}
    raw.update(top)
    return parse_config(raw)


def test_grid_without_resources_asks_a_gpu_per_model_cell_when_there_are_gpus(tmp_path, caplog):
    cells = expand_grid(_config(tmp_path))
    assert not any(c.resources_given for c in cells)
    notes = place_cells(cells, gpus=2)
    gpus = {c.spec.paradigm: c.resources.num_gpus for c in cells}
    assert gpus == {"finetune": 1, "zeroshot": 0}  # an Ollama model runs on its server
    devices = {c.spec.paradigm: c.spec.device for c in cells}
    assert devices == {"finetune": "auto", "zeroshot": "cpu"}
    assert notes and "sets no resources" in notes[0] and "1 GPU" in notes[0]

    cells = expand_grid(_config(tmp_path))
    assert place_cells(cells, gpus=0) == [] and all(c.resources.num_gpus == 0 for c in cells)
    cells = expand_grid(_config(tmp_path, device="cpu"))
    place_cells(cells, gpus=2)
    assert all(c.resources.num_gpus == 0 and c.spec.device == "cpu" for c in cells)


def test_a_gpu_cell_without_resources_gets_its_share_of_the_cpus(tmp_path):
    """One CPU would leave a GPU cell's training loader without workers: it gets the CPUs over the GPU
    cells that run at once (in process: one; a pool: its workers up to the GPUs; Ray: one per GPU)."""
    def placed(**kw):
        cells = expand_grid(_config(tmp_path))
        notes = place_cells(cells, **kw)
        return {c.spec.paradigm: c.resources.num_cpus for c in cells}, notes

    cpus, notes = placed(gpus=2, cpus=16)
    assert cpus == {"finetune": 16, "zeroshot": 1} and "1 GPU and 16 CPU(s) each" in notes[0]
    assert placed(gpus=2, cpus=16, workers=2)[0]["finetune"] == 8
    assert placed(gpus=2, cpus=16, workers=4)[0]["finetune"] == 8  # two GPU cells at once, not four
    assert placed(gpus=8, cpus=64, executor="ray")[0]["finetune"] == 8
    assert placed(gpus=4, cpus=2, executor="ray")[0]["finetune"] == 1
    assert placed(gpus=0, cpus=16)[0] == {"finetune": 1, "zeroshot": 1}  # no GPU: as before


def test_explicit_resources_are_kept_and_cpu_cells_leave_the_gpu_alone(tmp_path):
    cells = expand_grid(_config(tmp_path, resources={"num_cpus": 4, "num_gpus": 0}))
    assert all(c.resources_given for c in cells)
    place_cells(cells, gpus=2)
    assert all(c.resources.num_gpus == 0 and c.spec.device == "cpu" for c in cells)
    # with no CUDA GPU (a laptop: auto may mean MPS) the device stays as configured
    cells = expand_grid(_config(tmp_path, resources={"num_cpus": 4, "num_gpus": 0}))
    place_cells(cells, gpus=0)
    assert all(c.spec.device == "auto" for c in cells)


def test_device_index_and_gpu_requests_that_cannot_be_honoured_are_refused():
    with pytest.raises(ExecutorError, match="names one GPU"):
        place_cells([_cell(device="cuda:1", num_gpus=1)], executor="ray", gpus=4)
    with pytest.raises(ExecutorError, match="num_gpus is 0"):
        place_cells([_cell(device="cuda", num_gpus=0)], executor="local", workers=2, gpus=2)
    in_process = [_cell(device="cuda:1", num_gpus=1)]
    place_cells(in_process, executor="local", workers=1, gpus=2)
    assert in_process[0].spec.device == "cuda:1"  # in process the configured GPU is used


def test_dry_run_says_what_each_cell_gets(tmp_path, monkeypatch, capsys):
    from dermbench.cli.run import run_config

    monkeypatch.setattr(executors, "_local_gpus", lambda cells: ["0", "1"])
    assert run_config(_config(tmp_path), runs=str(tmp_path / "runs"), dry_run=True, workers=2) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("paradigm"))
    assert header.split() == ["paradigm", "model", "variant", "dataset", "seed", "device", "cpus", "gpus", "state"]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("finetune", "zeroshot"))}
    assert rows["finetune"][5:8] == ["cuda", "1", "1"] and rows["zeroshot"][5:8] == ["cpu", "1", "0"]
    assert "2 CUDA GPU(s) on this machine" in out
