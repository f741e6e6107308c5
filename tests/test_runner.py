"""Grid runner: expansion, skip/redo/force, failures, worker processes, kill-and-resume, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import test_runner_fake_plugin  # noqa: F401  (registers the "fake" paradigm in this process)
from dermbench.runner.config import parse_config
from dermbench.runner.executors import run_cells
from dermbench.runner.grid import cell_state, expand_grid
from dermbench.runs.record import is_complete

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from dermbench.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(root / "synth_a", n=60, size=32, seed=0, progress=False)
    make_synthetic_dataset(root / "synth_b", n=60, size=32, seed=1, progress=False)
    return root


def fake_config(data_root: Path, runs_root: Path, **grid_overrides) -> dict:
    block = {"paradigm": "fake", "models": ["good", "weak"], "variants": ["v1", "v2"],
             "model_settings": {"good": {"skill": 2.0}, "weak": {"skill": 0.3}}}
    block.update(grid_overrides)
    return {"experiment": "t", "runs_root": str(runs_root), "data_root": str(data_root),
            "datasets": ["synth_a", "synth_b"], "seeds": [1, 2], "n_boot": 20, "threshold_policy": "youden",
            "imports": ["test_runner_fake_plugin"], "grid": [block]}


def comparable(cell: Path) -> dict:
    """What must be identical between two runs of a cell (timing and provenance are not)."""
    metrics = json.loads((cell / "metrics.json").read_text())
    return {"splits": metrics["splits"], "threshold": metrics["threshold"], "extra": metrics["extra"],
            "predictions": (cell / "predictions_test.csv").read_text(),
            "validation": (cell / "predictions_validation.csv").read_text()}


def all_results(runs_root: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(runs_root)): comparable(p.parent) for p in sorted(runs_root.rglob("COMPLETE"))}


def test_grid_expands_models_datasets_seeds_variants(synth_root, tmp_path):
    config = parse_config(fake_config(synth_root, tmp_path / "runs"))
    cells = expand_grid(config)
    assert len(cells) == 2 * 2 * 2 * 2
    keys = [c.key for c in cells]
    assert len(set(keys)) == len(keys)
    assert keys[0] == "fake/good+v1/synth_a/seed1"
    # a plugin paradigm's named variants reach it as settings["variant"]
    assert cells[0].spec.settings == {"skill": 2.0, "variant": "v1"}
    assert cells[-1].spec.settings == {"skill": 0.3, "variant": "v2"}
    assert cells[0].spec.dataset == str(synth_root / "synth_a")
    assert {cell_state(c, tmp_path / "runs") for c in cells} == {"todo"}


def test_run_skips_complete_redoes_failed_and_force(synth_root, tmp_path):
    runs = tmp_path / "runs"
    raw = fake_config(synth_root, runs, models=["good", "broken"], variants=[""],
                      model_settings={"broken": {"fail": True}})
    raw["datasets"], raw["seeds"] = ["synth_a"], [1]
    cells = expand_grid(parse_config(raw))
    first = run_cells(cells, runs)
    assert (first.count("done"), first.count("failed"), first.count("skipped")) == (1, 1, 0)
    broken = first.failed[0]
    assert "fake failure" in broken.error and (broken.path / "error.txt").is_file()
    assert not is_complete(broken.path) and cell_state(cells[1], runs) == "failed"
    assert "1 done, 1 failed, 0 skipped" in first.format()

    good_metrics = (first.results[0].path / "metrics.json").stat().st_mtime_ns
    second = run_cells(cells, runs)  # complete skipped, failed redone (and fails again)
    assert [r.status for r in second.results] == ["skipped", "failed"]
    assert (first.results[0].path / "metrics.json").stat().st_mtime_ns == good_metrics

    # a partial cell (killed before its marker) is redone, and its stale files are replaced
    (first.results[0].path / "COMPLETE").unlink()
    (first.results[0].path / "stale.txt").write_text("left over")
    third = run_cells(cells[:1], runs)
    assert third.results[0].status == "done" and not (first.results[0].path / "stale.txt").exists()

    forced = run_cells(cells[:1], runs, force=True)
    assert forced.results[0].status == "done"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cell_without_its_weights_is_told_apart_by_its_error_class(synth_root, tmp_path, workers):
    """What `dermbench demo` skips (weights not on the machine) is decided from the exception's class
    where the cell failed, in process and in a worker pool alike, not from its text."""
    runs = tmp_path / "runs"
    raw = fake_config(synth_root, runs, models=["offline", "broken"], variants=[""],
                      model_settings={"offline": {"fail": "weights"}, "broken": {"fail": True}})
    raw["datasets"], raw["seeds"] = ["synth_a"], [1]
    summary = run_cells(expand_grid(parse_config(raw)), runs, workers=workers, imports=raw["imports"])
    by_model = {r.spec.model: r for r in summary.failed}
    assert by_model["offline"].missing_weights and "WeightsNotFoundError" in by_model["offline"].error
    assert not by_model["broken"].missing_weights


def test_process_pool_matches_in_process(synth_root, tmp_path):
    raw = fake_config(synth_root, tmp_path / "a")
    raw["seeds"] = [1]
    cells = expand_grid(parse_config(raw))
    run_cells(cells, tmp_path / "a")
    pool = run_cells(cells, tmp_path / "b", workers=2, imports=["test_runner_fake_plugin"])
    assert pool.count("done") == len(cells) and not pool.failed
    a = all_results(tmp_path / "a")
    assert len(a) == len(cells) and a == all_results(tmp_path / "b")


def test_process_pool_survives_a_dying_worker(synth_root, tmp_path):
    raw = fake_config(synth_root, tmp_path / "runs", models=["good", "crashy"], variants=[""],
                      model_settings={"crashy": {"crash": True}, "good": {"sleep": 0.3}})
    raw["datasets"] = ["synth_a"]
    cells = expand_grid(parse_config(raw))  # good/seed1, good/seed2, crashy/seed1, crashy/seed2
    summary = run_cells(cells, tmp_path / "runs", workers=2, imports=["test_runner_fake_plugin"])
    status = {c.key: r.status for c, r in zip(cells, summary.results)}
    assert status == {"fake/good/synth_a/seed1": "done", "fake/good/synth_a/seed2": "done",
                      "fake/crashy/synth_a/seed1": "failed", "fake/crashy/synth_a/seed2": "failed"}
    assert all("worker process died" in r.error for r in summary.failed)
    assert all((r.path / "error.txt").is_file() for r in summary.failed)


def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "dermbench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_sigkill_mid_grid_then_rerun_completes_only_missing_cells(synth_root, tmp_path):
    raw = fake_config(synth_root, tmp_path / "killed")
    raw["seeds"] = [1]
    raw["grid"][0]["settings"] = {"sleep": 0.6}
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    n_cells = len(expand_grid(parse_config(raw)))

    proc = _cli(["run", str(cfg)])
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "killed").rglob("COMPLETE"))) < 3:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    complete_before = len(list((tmp_path / "killed").rglob("COMPLETE")))
    assert 3 <= complete_before < n_cells, "the kill must land mid-grid"
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "killed").rglob("metrics.json")}

    rerun = _cli(["run", str(cfg)])
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out
    assert f"{n_cells - complete_before} done, 0 failed, {complete_before} skipped" in out
    assert all(p.stat().st_mtime_ns == t for p, t in written.items()), "complete cells must not be redone"

    raw["runs_root"] = str(tmp_path / "clean")
    cfg.write_text(yaml.safe_dump(raw))
    clean = _cli(["run", str(cfg)])
    out, _ = clean.communicate(timeout=120)
    assert clean.returncode == 0, out
    resumed = all_results(tmp_path / "killed")
    assert len(resumed) == n_cells
    assert resumed == all_results(tmp_path / "clean")


def test_dry_run_lists_cells_and_states(synth_root, tmp_path, capsys):
    from dermbench.cli.main import main

    raw = fake_config(synth_root, tmp_path / "runs")
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "16 cell(s)" in out and "fake 16" in out and "todo 16" in out
    assert not (tmp_path / "runs").exists()
    assert main(["run", str(cfg), "--only", "fake/good+v1/synth_a/*"]) == 0
    out = capsys.readouterr().out
    assert "2 done, 0 failed, 0 skipped" in out
    assert main(["run", str(cfg), "--dry-run"]) == 0
    assert "complete 2" in capsys.readouterr().out


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    from dermbench.cli.main import main

    raw = fake_config(tmp_path / "nowhere", tmp_path / "runs")
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "dataset folder(s) not found" in err and "synth_a" in err


@pytest.mark.slow
def test_ray_executor_matches_local(synth_root, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install 'dermbench[ray]'")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    raw = fake_config(synth_root, tmp_path / "local")
    raw["seeds"] = [1]
    raw["resources"] = {"num_cpus": 1, "num_gpus": 0}
    cells = expand_grid(parse_config(raw))
    run_cells(cells, tmp_path / "local")
    summary = run_cells(cells, tmp_path / "ray", executor="ray", address="local",
                        imports=["test_runner_fake_plugin"])
    assert summary.count("done") == len(cells), summary.format()
    assert not ray.is_initialized()
    assert all_results(tmp_path / "ray") == all_results(tmp_path / "local")
    again = run_cells(cells, tmp_path / "ray", executor="ray", address="local")
    assert again.count("skipped") == len(cells)
    from dermbench.runner.executors import ExecutorError

    for c in cells:
        c.resources = c.resources.model_copy(update={"num_gpus": 64})
    with pytest.raises(ExecutorError, match="num_gpus=64"):
        run_cells(cells, tmp_path / "ray", executor="ray", address="local", force=True)
    assert not ray.is_initialized()


def test_ray_chains_probe_cells_that_share_embeddings():
    from dermbench.runner.executors import _cache_group
    from dermbench.runs.cell import CellSpec

    head_a = CellSpec("e", "probe", "dinov2_giant", "/d/x", settings={"head": "rf"})
    head_b = CellSpec("e", "probe", "dinov2_giant", "/d/x", settings={"head": "svm"})
    other = CellSpec("e", "probe", "dinov2_giant", "/d/y", settings={"head": "rf"})
    assert _cache_group(head_a) == _cache_group(head_b) != _cache_group(other)
    assert _cache_group(CellSpec("e", "finetune", "resnet18", "/d/x")) is None


def test_complete_cell_with_changed_settings_is_redone_not_skipped(synth_root, tmp_path, capsys):
    """A cell's folder is named by model, variant, dataset and seed only; a complete cell recorded
    with other settings / threshold policy / n_boot holds results of another config and is redone."""
    from dermbench.cli.main import main

    runs = tmp_path / "runs"
    raw = fake_config(synth_root, runs, variants=[""])
    raw["datasets"], raw["seeds"] = ["synth_a"], [1]
    cells = expand_grid(parse_config(raw))  # good, weak
    assert run_cells(cells, runs).count("done") == 2
    weak = cells[1].spec.path(runs)
    before = json.loads((weak / "metrics.json").read_text())

    raw["grid"][0]["model_settings"]["weak"] = {"skill": 1.5}
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--dry-run"]) == 0
    assert "changed 1" in capsys.readouterr().out
    summary = run_cells(expand_grid(parse_config(raw)), runs)
    assert [r.status for r in summary.results] == ["skipped", "done"]
    after = json.loads((weak / "metrics.json").read_text())
    assert after["splits"] != before["splits"]
    assert yaml.safe_load((weak / "config.yaml").read_text())["settings"] == {"skill": 1.5}

    raw["n_boot"] = 30  # a top-level change reaches every cell
    assert run_cells(expand_grid(parse_config(raw)), runs).count("done") == 2
    assert run_cells(expand_grid(parse_config(raw)), runs).count("skipped") == 2


@pytest.mark.slow
def test_sigkilled_driver_takes_its_worker_processes_with_it(synth_root, tmp_path):
    """`dermbench run --workers 2` killed with SIGKILL: its workers must not go on running queued
    cells (they would race the re-run, which redoes the same cells in the same folders)."""
    raw = fake_config(synth_root, tmp_path / "runs")
    raw["grid"][0]["settings"] = {"sleep": 1.0}
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    n_cells = len(expand_grid(parse_config(raw)))

    proc = _cli(["run", str(cfg), "--workers", "2"])
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "runs").rglob("COMPLETE"))) < 2:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.5)  # a cell finishing right at the kill may still write its marker
    after_kill = len(list((tmp_path / "runs").rglob("COMPLETE")))
    time.sleep(3.0)  # orphaned workers would complete 2 more cells per 1 s sleep
    assert len(list((tmp_path / "runs").rglob("COMPLETE"))) == after_kill < n_cells

    rerun = _cli(["run", str(cfg), "--workers", "2"])
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out
    assert f"{n_cells - after_kill} done, 0 failed, {after_kill} skipped" in out
