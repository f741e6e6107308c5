"""Properties issue 12 asked for that later features could erode: exception classes only in
``dermbench/errors.py``, the commands' help stating the settings' own defaults, one YAML loader
for what a cell folder holds, and every path that builds a model from a cell making the chosen
``cuda:N`` current first (issue 16, item 3)."""

from __future__ import annotations

import argparse
import ast
import builtins
import re
from pathlib import Path

import pytest

import dermbench
from dermbench.errors import DermbenchError

SRC = Path(dermbench.__file__).resolve().parent

_BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                       if isinstance(value, type) and issubclass(value, BaseException)}


def _exception_classes(path: Path) -> list[str]:
    """Classes in ``path`` that derive from a built-in exception or from a name that reads like one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
                 for b in node.bases]
        if any(b in _BUILTIN_EXCEPTIONS or b.endswith(("Error", "Exception")) for b in bases):
            found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}({', '.join(bases)})")
    return found


def test_exception_classes_are_defined_in_errors_only():
    outside = [hit for path in sorted(SRC.rglob("*.py")) if path.name != "errors.py"
               for hit in _exception_classes(path)]
    assert outside == [], "define exception classes in dermbench/errors.py: " + "; ".join(outside)
    # and the scan itself finds classes where they are
    assert any("RequestFailed" in hit for hit in _exception_classes(SRC / "errors.py"))


def test_a_failed_server_request_is_a_dermbench_error_with_its_attempts():
    from dermbench.errors import RequestFailed
    from dermbench.models.frameworks import http

    assert http.RequestFailed is RequestFailed
    exc = RequestFailed("HTTP 400: bad model", 3)
    assert isinstance(exc, DermbenchError) and exc.attempts == 3 and str(exc) == "HTTP 400: bad model"


# --- the commands' help says the defaults the settings declare ------------------------------------

#: option dest -> settings field, where the command's option is named otherwise
_FIELD_OF = {"zeroshot": {"timeout": "timeout_s", "retries": "max_retries"}}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from dermbench.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _same(text: str, value: object) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, (int, float)):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return text == str(value)


@pytest.mark.parametrize("command", ["finetune", "probe", "zeroshot"])
def test_help_states_the_settings_defaults(command):
    """A literal ``(default X)`` in an option's help is the settings model's default for that
    setting: the default is declared once, in the settings, and the help must not drift from it."""
    from dermbench.runs.block import block_class

    settings_model = block_class(command).settings_model
    fields = settings_model.model_fields
    checked, wrong = [], []
    for action in _subparsers()[command]._actions:
        field = _FIELD_OF.get(command, {}).get(action.dest, action.dest)
        match = re.search(r"(?:\(|; )default ([^;,)]+)", action.help or "")
        if field not in fields or not match:
            continue
        declared = fields[field].default
        if command == "finetune":  # finetune's defaults are its preset's
            declared = getattr(settings_model.from_preset("paper"), field)
        checked.append(field)
        if not _same(match.group(1).strip(), declared):
            wrong.append(f"--{action.dest.replace('_', '-')}: help says {match.group(1)!r}, settings say {declared!r}")
    assert wrong == []
    if command != "finetune":
        assert len(checked) >= 5  # the scan reads the help texts it is meant to


@pytest.mark.parametrize("command", ["finetune", "probe", "zeroshot"])
def test_help_says_a_commands_experiment_and_how_to_share_a_grids_cells(command):
    """A command writes under runs/<its name>/ unless told the grid's experiment (README: a command
    and a grid block share a cell only with the same --experiment and --runs)."""
    help_text = " ".join(_subparsers()[command].format_help().split())
    assert f"(default {command}; give a grid's `experiment` to share its cells)" in help_text


# --- a cell folder's config.yaml is read like every config --------------------------------------------

def test_a_cell_config_with_a_duplicate_key_is_refused_when_a_cell_is_loaded(tmp_path):
    from dermbench.errors import UsageError
    from dermbench.runs.record import RunRecorder
    from dermbench.runs.scorer import read_cell

    recorder = RunRecorder(tmp_path / "cell")
    recorder.begin({})
    recorder.save_text("config.yaml", "experiment: e\nparadigm: probe\nmodel: handcrafted\ndataset: d\n"
                                      "seed: 1\nseed: 2\n")
    recorder.finish({"cell": {}})
    with pytest.raises(UsageError, match="config.yaml is not a usable cell configuration.*seed"):
        read_cell(tmp_path / "cell")


# --- issue 16, item 3: a scorer makes cuda:N current before it builds the model ------------------------

@pytest.fixture(scope="module")
def trained_cells(tmp_path_factory):
    """A tiny complete finetune cell and probe cell (random-init ResNet-10t, 32 px)."""
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec

    root = tmp_path_factory.mktemp("scorer_device")
    dataset = make_synthetic_dataset(root / "synth", n=40, size=32, seed=3, progress=False)
    specs = [CellSpec("d", "finetune", model="timm:resnet10t", dataset=str(dataset), seed=0, n_boot=10, quiet=True,
                      device="cpu", settings={"preset": "smoke", "weights": "random", "epochs": 1, "image_size": 32}),
             CellSpec("d", "probe", model="timm:resnet10t", dataset=str(dataset), seed=0, n_boot=10, quiet=True,
                      device="cpu", settings={"head": "logreg", "weights": "random", "image_size": 32})]
    cells = {}
    for spec in specs:
        result = execute_cell(spec, root / "runs")
        assert result.status == "done", result.error
        cells[spec.paradigm] = result.path
    return cells


@pytest.mark.parametrize("paradigm", ["finetune", "probe"])
def test_a_scorer_makes_the_chosen_gpu_current_before_building(trained_cells, paradigm, monkeypatch):
    from dermbench.runs.scorer import load_scorer, read_cell
    from dermbench.utils import device

    spec, metrics = read_cell(trained_cells[paradigm])
    activated = []
    monkeypatch.setattr(device, "choose_device", lambda requested: "cuda:1")
    # stands in for torch.cuda.set_device(1) on a 2-GPU machine; the model then goes to "cuda:1",
    # played here by the CPU
    monkeypatch.setattr(device, "activate_device", lambda chosen: activated.append(chosen) or "cpu")
    scorer = load_scorer(trained_cells[paradigm], spec, metrics, device="cuda:1")
    assert activated == ["cuda:1"]
    assert scorer.describe()["paradigm"] == paradigm


# --- console output goes through utils.console, not print --------------------------------------------

def test_fit_logs_its_epochs_through_the_console_not_stdout(tmp_path, monkeypatch, capsys):
    import torch

    from dermbench.data.contract import load_dataset
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.models import build_classifier
    from dermbench.paradigms.finetune import train as ft
    from dermbench.paradigms.finetune.settings import FinetuneSettings
    from dermbench.utils import console

    dataset = load_dataset(make_synthetic_dataset(tmp_path / "synth", n=40, size=32, seed=1, progress=False),
                           quiet=True)
    lines = []
    monkeypatch.setattr(console.get_logger("finetune"), "info",
                        lambda message, *args: lines.append(message % args if args else message))
    built = build_classifier("test_resnet", weights="random")
    settings = FinetuneSettings.from_preset("smoke", image_size=24, epochs=1, batch_size=16, weights="random")
    capsys.readouterr()
    ft.fit(built.model, dataset, settings, seed=0, work_dir=tmp_path / "work", mean=built.data_config["mean"],
           std=built.data_config["std"], device=torch.device("cpu"))
    assert capsys.readouterr().out == ""
    assert len(lines) == 1 and lines[0].startswith("epoch   1/1")


# --- one exclusion record: a dataset card's exclusions are summarised from Exclusion records ------------

def test_hdf5_import_records_missing_images_like_every_card(tmp_path):
    import shutil

    from dermbench.data.exclusions import exclusions_for, summarise_by_reason
    from dermbench.data.hdf5_io import export_hdf5, import_hdf5
    from dermbench.data.synth import make_synthetic_dataset

    dataset = make_synthetic_dataset(tmp_path / "synth", n=40, size=32, seed=2, progress=False)
    h5 = tmp_path / "synth.h5"
    export_hdf5(dataset, h5, include_images=False)
    images = tmp_path / "images"
    shutil.copytree(dataset / "images", images)
    gone = sorted(p.name for p in images.iterdir())[0]
    (images / gone).unlink()
    card = import_hdf5(h5, tmp_path / "imported", images=images, quiet=True)
    entry = card["excluded"][-1]
    assert set(entry) == set(summarise_by_reason(exclusions_for(["x"], "missing_image"))[0])  # one card shape
    assert (entry["reason"], entry["count"], entry["examples"]) == ("missing_image", 1, [gone])
    assert "--images" in entry["detail"]
