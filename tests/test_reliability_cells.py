"""Issue 14, cells: a complete cell is current only while everything that changes its numbers is
unchanged (dataset content included), COMPLETE vouches for the files it lists, and two runs on one
runs folder never compute the same cell twice."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import test_runner_fake_plugin  # noqa: F401  (registers the "fake" paradigm in this process)
from dermbench.runner.config import parse_config
from dermbench.runner.executors import run_cells
from dermbench.runner.grid import cell_state, expand_grid
from dermbench.runs.record import COMPLETE, RunRecorder, is_complete

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory) -> tuple[Path, Path]:
    """Two data roots, each with a dataset folder named ``synth_a`` (different content)."""
    from dermbench.data.synth import make_synthetic_dataset

    one = tmp_path_factory.mktemp("data_one")
    two = tmp_path_factory.mktemp("data_two")
    make_synthetic_dataset(one / "synth_a", n=60, size=32, seed=0, progress=False)
    make_synthetic_dataset(two / "synth_a", n=60, size=32, seed=5, progress=False)
    return one, two


@pytest.fixture
def log_lines():
    """Messages of the ``dermbench`` logger (INFO and up) during the test, whether or not the
    command line's console set-up stopped them from reaching pytest's own capture."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("dermbench")
    handler, level = Keep(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def one_cell_config(data_root: Path, runs: Path, **settings) -> dict:
    return {"experiment": "t", "runs_root": str(runs), "data_root": str(data_root), "datasets": ["synth_a"],
            "seeds": [1], "n_boot": 10, "imports": ["test_runner_fake_plugin"],
            "grid": [{"paradigm": "fake", "models": ["good"], "settings": {"skill": 1.0, **settings}}]}


def flip_labels(csv: Path) -> None:
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame["benign_malignant"] = frame["benign_malignant"].map({"benign": "malignant", "malignant": "benign"})
    frame.to_csv(csv, index=False)


# -- item 1: the dataset's content is part of what makes a complete cell current -----------------------

def test_complete_cell_is_redone_when_its_dataset_changed(data_roots, tmp_path, capsys):
    from dermbench.cli.main import main

    data = tmp_path / "data"
    shutil.copytree(data_roots[0] / "synth_a", data / "synth_a")
    runs = tmp_path / "runs"
    raw = one_cell_config(data, runs)
    cells = expand_grid(parse_config(raw))
    assert run_cells(cells, runs).count("done") == 1
    cell = cells[0].spec.path(runs)
    before = json.loads((cell / "metrics.json").read_text())
    assert run_cells(cells, runs).count("skipped") == 1

    flip_labels(data / "synth_a" / "test_metadata.csv")  # the attack: every test label flipped
    assert cell_state(cells[0], runs) == "changed"
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    old_fp = before["dataset"]["fingerprint"]
    assert "changed 1" in out and f"dataset changed: fingerprint {old_fp[:12]}→" in out

    summary = run_cells(cells, runs)
    assert [r.status for r in summary.results] == ["done"]
    after = json.loads((cell / "metrics.json").read_text())
    assert after["dataset"]["fingerprint"] != old_fp
    counts = before["dataset"]["counts"]["test"]
    assert after["dataset"]["counts"]["test"] == {"benign": counts["malignant"], "malignant": counts["benign"]}
    assert run_cells(cells, runs).count("skipped") == 1  # and current again


def test_another_dataset_with_the_same_folder_name_is_not_mistaken_for_the_recorded_one(data_roots, tmp_path):
    runs = tmp_path / "runs"
    first = expand_grid(parse_config(one_cell_config(data_roots[0], runs)))
    assert run_cells(first, runs).count("done") == 1
    second = expand_grid(parse_config(one_cell_config(data_roots[1], runs)))
    assert first[0].spec.path(runs) == second[0].spec.path(runs)  # same folder: names are unchanged
    assert cell_state(second[0], runs) == "changed"
    assert [r.status for r in run_cells(second, runs).results] == ["done"]
    recorded = json.loads((second[0].spec.path(runs) / "metrics.json").read_text())
    from dermbench.data.contract import dataset_fingerprint

    assert recorded["dataset"]["fingerprint"] == dataset_fingerprint(data_roots[1] / "synth_a")


# -- item 2: COMPLETE vouches for its files ----------------------------------------------------------

def test_a_weights_file_replaced_under_the_same_path_redoes_the_cell(data_roots, tmp_path, capsys):
    """`--weights PATH` (a finetune checkpoint, a probe backbone file): the path names the cell, the
    bytes decide its numbers. The record keeps their sha256; other bytes under the same path (same
    size) make the complete cell changed, and --dry-run says so."""
    import hashlib

    from dermbench.cli.main import main

    weights = tmp_path / "backbone.pt"
    weights.write_bytes(b"first weights" * 100)
    runs = tmp_path / "runs"
    raw = one_cell_config(data_roots[0], runs, weights=str(weights))
    cells = expand_grid(parse_config(raw))
    assert run_cells(cells, runs).count("done") == 1
    cell = cells[0].spec.path(runs)
    recorded = yaml.safe_load((cell / "config.yaml").read_text())
    assert recorded["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert run_cells(cells, runs).count("skipped") == 1

    weights.write_bytes(b"other weights" * 100)  # same size, same path
    assert cell_state(cells[0], runs) == "changed"
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "changed 1" in out and f"weights changed: {str(weights)!r} sha256 {recorded['weights_sha256'][:12]}→" in out
    assert [r.status for r in run_cells(cells, runs).results] == ["done"]
    assert run_cells(cells, runs).count("skipped") == 1  # current again

    folder = tmp_path / "hf_model"  # a weights folder: any file in it changing counts
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"a" * 64)
    cells = expand_grid(parse_config(one_cell_config(data_roots[0], runs, weights=str(folder))))
    assert run_cells(cells, runs).count("done") == 1
    (folder / "model.safetensors").write_bytes(b"b" * 64)
    assert cell_state(cells[0], runs) == "changed"

def _recorded_cell(path: Path) -> RunRecorder:
    rec = RunRecorder(path)
    rec.begin({"model": "m", "seed": 1})
    rec.save_predictions("test", pd.DataFrame({"img_id": ["a", "b"], "label": [0, 1],
                                               "p_malignant": [0.2, 0.9], "pred": [0, 1]}))
    rec.finish({"auroc": 1.0})
    return rec


def test_complete_marker_vouches_for_sizes_and_hashes(tmp_path):
    from dermbench.runs.record import verify_complete

    rec = _recorded_cell(tmp_path / "cell")
    marker = json.loads((rec.path / COMPLETE).read_text())
    entry = marker["files"]["metrics.json"]
    assert entry["size"] == (rec.path / "metrics.json").stat().st_size and len(entry["sha256"]) == 64
    assert is_complete(rec.path) and verify_complete(rec.path) == ""

    # same size, other bytes (e.g. a flipped prediction): not what the marker vouches for
    pred = rec.path / "predictions_test.csv"
    pred.write_text(pred.read_text().replace("0.9,1", "0.1,1"))
    assert not is_complete(rec.path)
    assert "predictions_test.csv" in verify_complete(rec.path)

    rec = _recorded_cell(tmp_path / "cell2")
    text = (rec.path / "metrics.json").read_text()
    (rec.path / "metrics.json").write_text(text[: len(text) // 2])  # truncated
    problem = verify_complete(rec.path)
    assert "metrics.json" in problem and "bytes" in problem
    assert verify_complete(tmp_path / "nowhere") is None  # no marker: not complete, nothing to verify


def test_a_corrupt_file_in_a_complete_cell_redoes_the_cell(data_roots, tmp_path):
    runs = tmp_path / "runs"
    cells = expand_grid(parse_config(one_cell_config(data_roots[0], runs)))
    run_cells(cells, runs)
    metrics = cells[0].spec.path(runs) / "metrics.json"
    good = metrics.read_text()
    metrics.write_text(good[:100])
    assert cell_state(cells[0], runs) == "corrupt"
    assert [r.status for r in run_cells(cells, runs).results] == ["done"]
    assert json.loads(metrics.read_text())["splits"] == json.loads(good)["splits"]


def test_report_skips_a_corrupt_cell_with_a_warning_naming_the_file(data_roots, tmp_path, log_lines):
    from dermbench.report import ReportOptions, build_report

    runs = tmp_path / "runs"
    raw = one_cell_config(data_roots[0], runs)
    raw["seeds"] = [1, 2, 3]
    cells = expand_grid(parse_config(raw))
    run_cells(cells, runs)
    bad = cells[0].spec.path(runs) / "metrics.json"
    bad.write_text(bad.read_text()[:50])
    # a marker written before markers vouched for contents (a plain list): the file itself is checked
    legacy = cells[1].spec.path(runs)
    marker = json.loads((legacy / COMPLETE).read_text())
    (legacy / COMPLETE).write_text(json.dumps({"completed_at": marker["completed_at"],
                                               "files": sorted(marker["files"])}))
    (legacy / "metrics.json").write_text('{"splits": ')
    report = build_report(runs, tmp_path / "report", ReportOptions(error_pages=False, quiet=True))
    assert report.n_cells == 1 and report.n_incomplete == 2
    warned = "\n".join(r.getMessage() for r in log_lines if r.levelno >= logging.WARNING)
    assert str(bad) in warned and str(legacy / "metrics.json") in warned
    incomplete = pd.read_csv(tmp_path / "report" / "tables" / "incomplete_cells.csv")
    assert set(incomplete["state"]) == {"corrupt"}


def test_report_of_only_corrupt_cells_exits_1(data_roots, tmp_path, capsys):
    from dermbench.cli.main import main

    runs = tmp_path / "runs"
    cells = expand_grid(parse_config(one_cell_config(data_roots[0], runs)))
    run_cells(cells, runs)
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--no-error-pages"]) == 0
    metrics = cells[0].spec.path(runs) / "metrics.json"
    metrics.write_text(metrics.read_text()[:50])
    assert main(["report", str(runs), "--out", str(out), "--no-error-pages"]) == 1
    captured = capsys.readouterr()
    assert "report of 0 cell(s) (1 failed or partial)" in captured.out
    assert "no complete cell" in captured.err and str(metrics) in captured.err
    assert (out / "index.html").exists()  # the page of what failed is still written


# -- item 4: one cell, one process -------------------------------------------------------------------

def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "dermbench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_runs_on_one_runs_folder_compute_each_cell_once(data_roots, tmp_path):
    raw = one_cell_config(data_roots[0], tmp_path / "runs", sleep=0.4)
    raw["grid"][0]["models"] = ["a", "b", "c", "d"]
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    first, second = _cli(["run", str(cfg)]), _cli(["run", str(cfg)])
    outs = [p.communicate(timeout=120)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    done = sum(line.split()[1] == "done" for out in outs for line in out.splitlines() if line.startswith("["))
    assert done == 4, outs  # each of the 4 cells computed by exactly one of the two runs
    assert all(is_complete(p.parent) for p in (tmp_path / "runs").rglob("config.yaml"))


def test_a_cell_locked_by_another_process_is_waited_for(data_roots, tmp_path, log_lines):
    from dermbench.runner.cell import cell_lock_path, execute_cell

    runs = tmp_path / "runs"
    cells = expand_grid(parse_config(one_cell_config(data_roots[0], runs)))
    spec = cells[0].spec
    lock = cell_lock_path(spec.path(runs))
    lock.parent.mkdir(parents=True, exist_ok=True)
    # another "dermbench run" holds the cell, then lets go without finishing it (e.g. it was stopped)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time, os\n"
        f"fh = open({str(lock)!r}, 'a+'); fcntl.flock(fh, fcntl.LOCK_EX)\n"
        "fh.seek(0); fh.truncate(); fh.write(f'pid {os.getpid()}'); fh.flush()\n"
        "print('locked', flush=True); time.sleep(1.5)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert execute_cell(spec, runs, wait=False).status == "busy"
    t0 = time.perf_counter()
    run_cells([cells[0]], runs)  # waits for the holder, then computes (the holder wrote nothing)
    assert time.perf_counter() - t0 >= 0.5
    assert any(f"pid {holder.pid}" in r.getMessage() and "waiting" in r.getMessage() for r in log_lines)
    holder.wait(timeout=30)
    assert is_complete(spec.path(runs))


def test_a_stale_lock_of_a_dead_process_is_taken_over(data_roots, tmp_path):
    from dermbench.runner.cell import cell_lock_path, execute_cell

    runs = tmp_path / "runs"
    spec = expand_grid(parse_config(one_cell_config(data_roots[0], runs)))[0].spec
    lock = cell_lock_path(spec.path(runs))
    lock.parent.mkdir(parents=True, exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", (
        "import fcntl, os\n"
        f"fh = open({str(lock)!r}, 'a+'); fcntl.flock(fh, fcntl.LOCK_EX)\n"
        "fh.write(f'pid {os.getpid()}'); fh.flush(); os._exit(9)\n")], check=False)
    assert dead.returncode == 9 and lock.is_file()
    assert execute_cell(spec, runs, wait=False).status == "done"
