"""Run config schema: unknown keys, wrong types and unknown names are errors naming key and choices."""

from __future__ import annotations

import pytest

import dermbench.plugins
from dermbench.registry import Registry
from dermbench.runner.config import ConfigError, load_config, parse_config
from dermbench.runner.grid import expand_grid


@pytest.fixture
def registries(monkeypatch):
    """Small registries standing in for the real ones, so these tests do not depend on other parts."""
    regs = {kind: Registry(kind) for kind in ("finetune-models", "backbones", "heads", "zeroshot-models",
                                              "prompt-sets")}
    for kind, names in {"finetune-models": ["resnet18", "convnext_tiny"], "backbones": ["handcrafted", "dinov2_s"],
                        "heads": ["logistic_regression", "rf"], "zeroshot-models": ["clip_b32"],
                        "prompt-sets": ["simple", "abcde"]}.items():
        for name in names:
            regs[kind].add(name, "builtins:object")
    real = dermbench.plugins.get_registry
    monkeypatch.setattr(dermbench.plugins, "get_registry", lambda kind: regs[kind] if kind in regs else real(kind))
    return regs


def base(**grid_block) -> dict:
    block = {"paradigm": "probe", "backbones": ["handcrafted"], "heads": ["rf"]}
    block.update(grid_block)
    return {"experiment": "x", "datasets": ["d1"], "grid": [block]}


def error_of(data) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_unknown_top_level_key_names_key_and_allowed(registries):
    msg = error_of({**base(), "seedz": [1]})
    assert "'seedz' (did you mean 'seeds'?)" in msg and "allowed keys:" in msg and "experiment" in msg


def test_unknown_key_in_block_and_nested(registries):
    msg = error_of(base(headz=["rf"]))
    assert "grid[0]" in msg and "'headz' (did you mean 'heads'?)" in msg
    msg = error_of({**base(), "resources": {"num_gpu": 1}})
    assert "resources" in msg and "num_gpus" in msg


def test_wrong_type_names_the_key(registries):
    msg = error_of({**base(), "n_boot": "many"})
    assert "n_boot" in msg and "integer" in msg
    msg = error_of({**base(), "seeds": 3})
    assert "seeds" in msg


def test_unknown_model_names_with_did_you_mean(registries):
    msg = error_of(base(backbones=["dinov2_z"]))
    assert "grid[0].backbones" in msg and "dinov2_s" in msg and "Available" in msg
    msg = error_of(base(heads=["logistic_regresion"]))
    assert "Did you mean: logistic_regression" in msg
    msg = error_of({"experiment": "x", "datasets": ["d"],
                    "grid": [{"paradigm": "zeroshot", "models": ["clip_b32"], "prompt_sets": ["simpel"]}]})
    assert "prompt_sets" in msg and "simple" in msg


def test_unknown_paradigm(registries):
    msg = error_of({"experiment": "x", "datasets": ["d"], "grid": [{"paradigm": "finetuning", "models": ["a"]}]})
    assert "finetuning" in msg and "finetune" in msg


def test_finetune_settings_are_validated_by_the_paradigm_model(registries):
    ok = parse_config({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet18"], "balance": ["balanced_aug", "unbalanced"],
         "settings": {"preset": "smoke", "epochs": 2}}]})
    cells = expand_grid(ok)
    assert [c.spec.variant for c in cells] == ["balanced_aug", "unbalanced"]
    assert [c.spec.settings["balance"] for c in cells] == ["balanced_aug", "unbalanced"]
    assert cells[0].spec.settings["epochs"] == 2 and cells[0].spec.settings["image_size"] == 48  # preset applied
    msg = error_of({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet18"], "settings": {"learning_rate": 1}}]})
    assert "learning_rate" in msg and "lr" in msg
    msg = error_of({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet18"], "balance": ["oversample"]}]})
    assert "oversample" in msg and "balanced_aug" in msg


def test_duplicates_and_dangling_names(registries):
    assert "twice" in error_of({**base(), "seeds": [1, 1]})
    assert "appear twice" in error_of({**base(), "datasets": ["a/d1", "b/d1"]})
    assert "not in datasets" in error_of(base(datasets=["nope"]))
    assert "model_settings" in error_of(base(model_settings={"other": {}}))


def test_threshold_policy_checked(registries):
    msg = error_of({**base(), "threshold_policy": "best-guess"})
    assert "  threshold_policy: unknown threshold policy 'best-guess'" in msg and "youden" in msg
    # a block's own policy: the error names that block's key, not "(top level)"
    msg = error_of(base(threshold_policy="sensitivity:1.5"))
    assert "  grid[0].threshold_policy: " in msg and "'sensitivity:1.5'" in msg and "(top level)" not in msg


def test_load_config_yaml_errors(tmp_path, registries):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(top)


def test_probe_label_fractions_become_variants(registries):
    config = parse_config({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "probe", "backbones": ["handcrafted"], "heads": ["logistic_regression", "rf"],
         "label_fractions": [0.1, 1.0]}]})
    cells = expand_grid(config)
    assert [c.spec.variant for c in cells] == ["logistic_regression+frac0.1", "logistic_regression",
                                               "rf+frac0.1", "rf"]
    assert [(c.spec.settings["head"], c.spec.settings["label_fraction"]) for c in cells] == [
        ("logistic_regression", 0.1), ("logistic_regression", 1.0), ("rf", 0.1), ("rf", 1.0)]
    assert "label fractions" in error_of(base(label_fractions=[0.0]))


def test_plugin_imports_must_exist():
    msg = error_of({"experiment": "x", "datasets": ["d"], "imports": ["no_such_plugin_module"],
                    "grid": [{"paradigm": "fake", "models": ["m"]}]})
    assert "no_such_plugin_module" in msg


def test_paper_config_lists_the_study_grid(capsys):
    """The packaged paper.yaml validates against the real registries and expands to the full grid."""
    from dermbench.cli.main import main

    config = load_config("paper")
    cells = expand_grid(config)
    by = {}
    for c in cells:
        by.setdefault(c.spec.paradigm, set()).add((c.spec.model, c.spec.variant))
    assert {d.name for d in config.datasets} == {"hc", "pad_ufes_20", "ddi", "sd198", "isic2018", "isic2024",
                                                "merged_clinic", "merged_dermatoscopic", "merged"}
    assert len({m for m, _ in by["finetune"]}) == 15 and len(by["finetune"]) == 30
    assert len({m for m, _ in by["probe"]}) == 5 and {v for _, v in by["probe"]} == {"rf", "xgboost", "svm", "mlp"}
    vlm_prompts = {"image_only", "simple", "patient_metadata", "abcde"}
    assert vlm_prompts <= {v for _, v in by["zeroshot"]}
    assert len(cells) == 9 * (30 + 20 + len(by["zeroshot"]))
    assert main(["run", "configs/paper.yaml", "--dry-run"]) == 0
    assert f"{len(cells)} cell(s)" in capsys.readouterr().out
