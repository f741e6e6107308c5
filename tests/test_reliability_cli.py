"""Issue 14, the command line: one-line errors (exit 2) for unusable paths and long user data
(item 10); report with no runs and stale report files, score and excluded ids, prepare -q, bounded
memory when validating a large predictions file (item 11)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest
import yaml

import test_runner_fake_plugin  # noqa: F401  (registers the "fake" paradigm in this process)
from dermbench.cli.main import main

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from dermbench.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(root / "synth_a", n=60, size=32, seed=0, progress=False)
    make_synthetic_dataset(root / "synth_b", n=60, size=32, seed=1, progress=False)
    return root


def grid_file(tmp_path: Path, data_root: Path, runs: Path, datasets=("synth_a",)) -> Path:
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump({
        "experiment": "t", "runs_root": str(runs), "data_root": str(data_root), "datasets": list(datasets),
        "seeds": [1], "n_boot": 10, "imports": ["test_runner_fake_plugin"],
        "grid": [{"paradigm": "fake", "models": ["good", "weak"], "model_settings": {"weak": {"skill": 0.3}}}]}))
    return cfg


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in captured.err
    return err


# -- item 10: unusable paths ----------------------------------------------------------------------------

def test_a_runs_folder_that_is_a_file(synth, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.write_text("not a folder")
    assert main(["run", str(grid_file(tmp_path, synth, runs))]) == 2
    assert str(runs) in one_line_error(capsys)
    assert main(["probe", "--backbone", "handcrafted", "--dataset", str(synth / "synth_a"), "--runs", str(runs)]) == 2
    assert str(runs) in one_line_error(capsys)


def test_a_file_where_a_cell_folder_goes(synth, tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "t" / "fake").mkdir(parents=True)
    (runs / "t" / "fake" / "weak").write_text("a file where the cell's folder goes")
    assert main(["run", str(grid_file(tmp_path, synth, runs))]) == 2
    assert str(runs / "t" / "fake" / "weak") in one_line_error(capsys)


def test_a_file_where_a_cell_folder_goes_fails_only_that_cell(synth, tmp_path):
    from dermbench.runner.config import load_config
    from dermbench.runner.executors import run_cells
    from dermbench.runner.grid import expand_grid

    runs = tmp_path / "runs"
    cells = expand_grid(load_config(grid_file(tmp_path, synth, runs)))
    blocker = cells[1].spec.path(runs).parent
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    summary = run_cells(cells, runs)  # the library path: the grid goes on, the cell is failed
    assert [r.status for r in summary.results] == ["done", "failed"]
    assert str(blocker) in summary.results[1].error


def test_report_out_that_is_a_file_or_cannot_be_written(synth, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", str(grid_file(tmp_path, synth, runs))]) == 0
    capsys.readouterr()
    out = tmp_path / "report.html"
    out.write_text("a file")
    assert main(["report", str(runs), "--out", str(out)]) == 2
    assert str(out) in one_line_error(capsys)
    assert main(["report", str(runs), "--out", "/proc/dermbench-report"]) == 2  # not writable, even for root
    assert "/proc/dermbench-report" in one_line_error(capsys)


def test_an_unwritable_runs_folder(synth, tmp_path, capsys):
    assert main(["run", str(grid_file(tmp_path, synth, Path("/proc/dermbench-runs")))]) == 2
    assert "/proc/dermbench-runs" in one_line_error(capsys)


@pytest.mark.parametrize("argv", [["validate", "{long}"], ["run", "{long}.yaml"], ["report", "{long}"],
                                  ["report", "{runs}", "--out", "{long}"], ["predict", "{long}", "{synth}"],
                                  ["synth", "--out", "{long}"]])
def test_a_path_too_long_for_the_file_system_is_one_line(argv, synth, tmp_path, capsys):
    """A 300-character file name (over the file system's 255) was an OSError traceback that echoed
    the whole name, in every command."""
    long = "y" * 300
    runs = tmp_path / "runs"
    if "{runs}" in argv:
        assert main(["run", str(grid_file(tmp_path, synth, runs)), "-q"]) == 0
        capsys.readouterr()
    args = [a.format(long=long, runs=runs, synth=synth / "synth_a") for a in argv]
    assert main(args) == 2
    err = one_line_error(capsys)
    assert "too long" in err and len(err) < 600


def test_an_unusable_cache_folder_is_one_line_before_any_cell_runs(synth, tmp_path, capsys, monkeypatch):
    """DERMBENCH_CACHE that is a file (or cannot be created) failed every cell with a bare
    'NotADirectoryError: ...' in its error.txt; it is refused up front, naming the variable."""
    cache = tmp_path / "cache_file"
    cache.write_text("not a folder")
    monkeypatch.setenv("DERMBENCH_CACHE", str(cache))
    runs = tmp_path / "runs"
    assert main(["run", str(grid_file(tmp_path, synth, runs))]) == 2
    assert "DERMBENCH_CACHE" in one_line_error(capsys)
    assert main(["probe", "--backbone", "handcrafted", "--dataset", str(synth / "synth_a"), "--runs", str(runs)]) == 2
    assert "DERMBENCH_CACHE" in one_line_error(capsys)
    assert not list(runs.rglob("error.txt"))


def test_messages_quote_at_most_about_200_characters_of_user_data(synth, tmp_path, capsys):
    truth = pd.read_csv(synth / "synth_a" / "test_metadata.csv", dtype=str)
    huge_id = "x" * 1_000_000
    preds = tmp_path / "p.csv"
    pd.DataFrame({"img_id": list(truth["img_id"]) + [huge_id], "p_malignant": 0.5}).to_csv(preds, index=False)
    assert main(["score", str(preds), "--truth", str(synth / "synth_a")]) == 2
    err = capsys.readouterr().err
    assert "not in the ground truth" in err and "more characters" in err and len(err) < 2000
    assert main(["probe", "--backbone", "handcrafted", "--dataset", str(synth / "synth_a"),
                 "--set", "y" * 100_000]) == 2
    err = capsys.readouterr().err
    assert len(err) < 1000 and "--set" in err


# -- item 11 ------------------------------------------------------------------------------------------------

def test_report_on_a_folder_without_runs_says_so(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err
    assert "no run records" in err and str(tmp_path / "runs") in err


def test_report_removes_its_own_stale_files_and_only_those(synth, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", str(grid_file(tmp_path, synth, runs, datasets=("synth_a", "synth_b")))]) == 0
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--no-error-pages"]) == 0
    stale = out / "leaderboards" / "synth_b.md"
    assert stale.is_file()
    (out / "my_notes.txt").write_text("mine")
    (out / "leaderboards" / "my_board.md").write_text("mine too")
    shutil.rmtree(runs / "t" / "fake" / "good" / "synth_b")
    shutil.rmtree(runs / "t" / "fake" / "weak" / "synth_b")
    capsys.readouterr()
    assert main(["report", str(runs), "--out", str(out), "--no-error-pages"]) == 0
    assert not stale.exists() and not list((out / "plots").glob("*synth_b*"))
    assert (out / "leaderboards" / "synth_a.md").is_file()
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "leaderboards" / "my_board.md").is_file()


def test_score_explains_ids_the_truth_set_excluded(synth, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(synth / "synth_a", data)
    truth = pd.read_csv(data / "test_metadata.csv", dtype=str)
    gone = truth["img_id"].iloc[0]
    (data / "images" / gone).unlink()
    preds = tmp_path / "p.csv"
    pd.DataFrame({"img_id": truth["img_id"], "p_malignant": 0.5}).to_csv(preds, index=False)
    assert main(["score", str(preds), "--truth", str(data), "--n-boot", "0"]) == 0
    out = capsys.readouterr().out
    assert f"n={len(truth) - 1} " in out
    assert "1 prediction(s) not scored" in out and repr(gone) in out and "missing_image" in out


def test_prepare_takes_q_after_the_source_name(synth, tmp_path):
    frame = pd.concat([pd.read_csv(synth / "synth_a" / f"{s}_metadata.csv", dtype=str)
                       for s in ("train", "validation", "test")])
    raw = tmp_path / "raw"
    shutil.copytree(synth / "synth_a" / "images", raw / "images")
    pd.DataFrame({"filename": frame["img_id"], "diagnosis": frame["benign_malignant"]}).to_csv(
        raw / "meta.csv", index=False)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({"columns": {"img_id": "filename"},
                                       "labels": {"benign": "benign", "malignant": "malignant"}}))
    done = subprocess.run([sys.executable, "-m", "dermbench", "prepare", "csv", "-q", "--raw", str(raw),
                           "--out", str(tmp_path / "out"), "--mapping", str(mapping)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == ""
    assert (tmp_path / "out" / "test_metadata.csv").is_file()


def test_a_large_predictions_file_is_validated_in_bounded_memory(synth, tmp_path):
    from dermbench.errors import PredictionsError
    from dermbench.runs.score import read_predictions_csv, validate_against_truth

    truth = pd.read_csv(synth / "synth_a" / "test_metadata.csv", dtype=str)
    path = tmp_path / "big.csv"
    rows = 400_000  # ~20 MB of predictions for images the truth does not have
    with open(path, "w") as fh:
        fh.write("img_id,p_malignant,pred,label,note\n")
        for i in truth["img_id"]:
            fh.write(f"{i},0.5,0,0,kept\n")
        block = "".join(f"extra_{k:07d}.jpg,0.25,0,0,some longer free text here\n" for k in range(10_000))
        for _ in range(rows // 10_000):
            fh.write(block)
    size = path.stat().st_size
    from dermbench.data.contract import load_dataset

    ds = load_dataset(synth / "synth_a", splits=("test",), check_images=False, quiet=True)
    t0 = time.perf_counter()
    tracemalloc.start()
    with pytest.raises(PredictionsError) as err:
        validate_against_truth(read_predictions_csv(path), ds.split("test"), where=str(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert f"{rows} prediction(s) for images not in the ground truth" in str(err.value)
    assert peak < size / 2, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
    assert time.perf_counter() - t0 < 20


def test_a_predictions_file_with_an_absurdly_long_line_is_refused_without_reading_it_whole(synth, tmp_path):
    from dermbench.errors import PredictionsError
    from dermbench.runs.score import read_predictions_csv, validate_against_truth

    path = tmp_path / "long.csv"
    with open(path, "w") as fh:
        fh.write("img_id,p_malignant\n")
        fh.write("y" * 30_000_000 + ",0.5\n")
    truth = pd.read_csv(synth / "synth_a" / "test_metadata.csv", dtype=str).assign(label=0)
    tracemalloc.start()
    with pytest.raises(PredictionsError, match="line 2 is longer than"):
        validate_against_truth(read_predictions_csv(path), truth, where=str(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10_000_000


def test_validate_quotes_a_huge_id_in_at_most_about_200_characters(synth, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(synth / "synth_a", data)
    frame = pd.read_csv(data / "test_metadata.csv", dtype=str)
    frame.loc[0, "img_id"] = "z" * 500_000  # no such image: an exclusion that names the id
    frame.to_csv(data / "test_metadata.csv", index=False)
    assert main(["validate", str(data), "--no-image-check"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("  excluded: "))
    assert "more characters" in line and len(line) < 1000
