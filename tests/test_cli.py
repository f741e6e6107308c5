"""The command line as a user meets it: every command listed, clear errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

from dermbench.cli.main import COMMANDS


def dermbench(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dermbench", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_command() -> None:
    out = dermbench("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert f"    {name}" in out.stdout, name


def test_unknown_model_gets_did_you_mean_without_traceback(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    out = dermbench("probe", "--backbone", "handcrafed", "--dataset", str(tmp_path / "d"))
    assert out.returncode == 2
    assert "Did you mean: handcrafted" in out.stderr and "Traceback" not in out.stderr


def test_missing_dataset_is_an_error_before_any_cell(tmp_path) -> None:
    out = dermbench("finetune", "--model", "resnet18", "--dataset", "nope", "--runs", str(tmp_path / "runs"),
                    cwd=tmp_path)
    assert out.returncode == 2
    assert "dataset folder nope does not exist" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_quiet_before_or_after_the_command(tmp_path) -> None:
    for argv in (["-q", "ls", "heads"], ["ls", "heads", "--quiet"]):
        out = dermbench(*argv)
        assert out.returncode == 0 and "logreg" in out.stdout


def test_output_piped_into_a_closed_reader_is_not_a_traceback() -> None:
    # `dermbench ls | head -1`: the reader closes the pipe early
    proc = subprocess.Popen([sys.executable, "-m", "dermbench", "ls"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=30)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_workers_must_be_positive() -> None:
    out = dermbench("run", "demo", "--workers", "0", "--dry-run")
    assert out.returncode == 2 and "--workers: must be >= 1" in out.stderr and "Traceback" not in out.stderr


def test_cells_with_other_weights_get_their_own_folder() -> None:
    from dermbench.cli.cells import weights_tag

    assert weights_tag(None) == "" and weights_tag("default") == ""
    assert weights_tag("random") == "+random"
    assert weights_tag("/models/derm/resnet18 best.pth") == "+w-resnet18_best"
    assert weights_tag("pypi:efficientnet-lite0") == "+pypi"


def test_report_of_a_missing_runs_folder_or_an_unknown_metric_is_one_line(tmp_path) -> None:
    out = dermbench("report", str(tmp_path / "nope"), "--out", str(tmp_path / "report"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: runs folder") and "does not exist" in out.stderr
    (tmp_path / "runs").mkdir()
    out = dermbench("report", str(tmp_path / "runs"), "--metric", "aucroc", "--out", str(tmp_path / "report"))
    assert out.returncode == 2 and "unknown metric 'aucroc'" in out.stderr and "Traceback" not in out.stderr
