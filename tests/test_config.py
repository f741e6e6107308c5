"""Run config schema: unknown keys, wrong types and unknown names are errors naming key and choices;
model names go through the one resolver, as on the command line."""

from __future__ import annotations

import pytest

from dermbench.errors import ConfigError
from dermbench.runner.config import load_config, paradigm_blocks, parse_config
from dermbench.runner.grid import expand_grid


def base(**grid_block) -> dict:
    block = {"paradigm": "probe", "backbones": ["handcrafted"], "heads": ["rf"]}
    block.update(grid_block)
    return {"experiment": "x", "datasets": ["d1"], "grid": [block]}


def error_of(data) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_the_schema_comes_from_the_paradigms_blocks():
    blocks = paradigm_blocks()
    assert set(blocks) == {"finetune", "probe", "zeroshot"}
    assert blocks["probe"].models_field == "backbones" and blocks["finetune"].model_kind == "classifier"


def test_unknown_top_level_key_names_key_and_allowed():
    msg = error_of({**base(), "seedz": [1]})
    assert "'seedz' (did you mean 'seeds'?)" in msg and "allowed keys:" in msg and "experiment" in msg


def test_unknown_key_in_block_and_nested():
    msg = error_of(base(headz=["rf"]))
    assert "grid[0]" in msg and "'headz' (did you mean 'heads'?)" in msg and "grid[0].probe" not in msg
    msg = error_of({**base(), "resources": {"num_gpu": 1}})
    assert "resources" in msg and "num_gpus" in msg
    msg = error_of({"experiment": "x", "datasets": ["d"],
                    "grid": [{"paradigm": "finetune", "models": ["resnet18"], "balanse": ["unbalanced"]}]})
    assert "'balanse' (did you mean 'balance'?)" in msg


def test_wrong_type_names_the_key():
    msg = error_of({**base(), "n_boot": "many"})
    assert "n_boot" in msg and "integer" in msg
    msg = error_of({**base(), "seeds": 3})
    assert "seeds" in msg


def test_unknown_names_with_did_you_mean():
    msg = error_of(base(backbones=["handcraftd"]))
    assert "grid[0].backbones" in msg and "Did you mean: handcrafted" in msg
    msg = error_of(base(heads=["logreq"]))
    assert "grid[0].heads" in msg and "Did you mean: logreg" in msg
    msg = error_of({"experiment": "x", "datasets": ["d"],
                    "grid": [{"paradigm": "zeroshot", "models": ["clip_vit_b32"], "prompt_sets": ["simpel"]}]})
    assert "prompt_sets" in msg and "simple" in msg
    # a known model asked for as a kind it is not: the message says which kinds it has
    msg = error_of({"experiment": "x", "datasets": ["d"], "grid": [{"paradigm": "finetune", "models": ["handcrafted"]}]})
    assert "grid[0].models" in msg and "handcrafted" in msg and "backbone" in msg


def test_unknown_paradigm():
    msg = error_of({"experiment": "x", "datasets": ["d"], "grid": [{"paradigm": "finetuning", "models": ["a"]}]})
    assert "finetuning" in msg and "finetune" in msg


def test_prefix_and_bare_timm_names_are_accepted_and_made_canonical():
    """Names the command line takes are taken by the grid too, under their canonical name."""
    config = parse_config({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["timm:resnet18", "resnet10t", "RESNET18"], "settings": {"preset": "smoke"}},
        {"paradigm": "probe", "backbones": ["hf:facebook/dinov2-small", "hf-hub:org/model", "timm:resnet10t"],
         "heads": ["logreg"]}]})
    assert config.grid[0].model_names() == ["timm:resnet18", "timm:resnet10t", "resnet18"]
    assert config.grid[1].model_names() == ["hf:facebook/dinov2-small", "open_clip:hf-hub:org/model", "timm:resnet10t"]
    # one model named twice is refused, whichever way it is spelled
    msg = error_of({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet10t", "timm:resnet10t"]}]})
    assert "grid[0].models" in msg and "listed twice" in msg and "timm:resnet10t" in msg


def test_model_settings_keys_may_use_any_spelling_of_a_model():
    config = parse_config({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["timm:resnet10t"], "settings": {"preset": "smoke"},
         "model_settings": {"resnet10t": {"epochs": 2}}}]})
    (cell,) = expand_grid(config)
    assert cell.spec.model == "timm:resnet10t" and cell.spec.settings["epochs"] == 2


def test_finetune_settings_are_validated_by_the_paradigm_model():
    ok = parse_config({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet18"], "balance": ["balanced_aug", "unbalanced"],
         "settings": {"preset": "smoke", "epochs": 2}}]})
    cells = expand_grid(ok)
    assert [c.spec.identity.variant for c in cells] == ["balanced_aug", "unbalanced"]
    assert [c.spec.settings["balance"] for c in cells] == ["balanced_aug", "unbalanced"]
    assert cells[0].spec.settings["epochs"] == 2 and cells[0].spec.settings["image_size"] == 48  # preset applied
    msg = error_of({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet18"], "settings": {"learning_rate": 1}}]})
    assert "learning_rate" in msg and "lr" in msg and "grid[0] (finetune, model 'resnet18')" in msg
    msg = error_of({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet18"], "balance": ["oversample"]}]})
    assert "oversample" in msg and "balanced_aug" in msg
    msg = error_of({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet18"], "settings": {"preset": "fast"}}]})
    assert "unknown finetune preset 'fast'" in msg and "smoke" in msg


def test_a_finetune_block_without_balance_names_its_cells_by_the_default_mode():
    config = parse_config({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet18"]}]})
    assert [c.spec.label for c in expand_grid(config)] == ["resnet18+balanced_aug"]


def test_weights_variants_beside_the_pretrained_block_are_distinct_cells():
    config = parse_config({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet18"]},
        {"paradigm": "finetune", "models": ["resnet18"], "settings": {"weights": "random"}},
        {"paradigm": "finetune", "models": ["resnet18"], "settings": {"weights": "/models/derm/resnet18 best.pth"}},
        {"paradigm": "probe", "backbones": ["efficientnet_lite0_imagenet"], "heads": ["logreg"]},
        {"paradigm": "probe", "backbones": ["efficientnet_lite0_imagenet"], "heads": ["logreg"],
         "settings": {"weights": "random"}}]})
    labels = [c.spec.label for c in expand_grid(config)]
    assert labels == ["resnet18+balanced_aug", "resnet18+balanced_aug+random", "resnet18+balanced_aug+w-resnet18_best",
                      "efficientnet_lite0_imagenet+logreg", "efficientnet_lite0_imagenet+logreg+random"]


def test_the_same_cell_twice_is_refused():
    config = parse_config({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "finetune", "models": ["resnet10t"], "settings": {"preset": "smoke"}},
        {"paradigm": "finetune", "models": ["timm:resnet10t"], "settings": {"preset": "smoke", "epochs": 2}}]})
    with pytest.raises(ConfigError, match=r"grid\[1\] repeats the cell .*timm_resnet10t\+balanced_aug.* of grid\[0\]"):
        expand_grid(config)


def test_duplicates_and_dangling_names():
    assert "twice" in error_of({**base(), "seeds": [1, 1]})
    assert "appear twice" in error_of({**base(), "datasets": ["a/d1", "b/d1"]})
    assert "not in datasets" in error_of(base(datasets=["nope"]))
    assert "model_settings" in error_of(base(model_settings={"other": {}}))
    assert "listed twice" in error_of(base(heads=["rf", "rf"]))


def test_threshold_policy_checked():
    msg = error_of({**base(), "threshold_policy": "best-guess"})
    assert "  threshold_policy: unknown threshold policy 'best-guess'" in msg and "youden" in msg
    # a block's own policy: the error names that block's key, not "(top level)"
    msg = error_of(base(threshold_policy="sensitivity:1.5"))
    assert "  grid[0].threshold_policy: " in msg and "'sensitivity:1.5'" in msg and "(top level)" not in msg


def test_load_config_yaml_errors(tmp_path):
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


def test_probe_label_fractions_are_curve_points_of_one_configuration():
    config = parse_config({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "probe", "backbones": ["handcrafted"], "heads": ["logreg", "rf"], "label_fractions": [0.1, 1.0]}]})
    cells = expand_grid(config)
    assert [c.spec.label for c in cells] == ["handcrafted+logreg+frac0.1", "handcrafted+logreg",
                                             "handcrafted+rf+frac0.1", "handcrafted+rf"]
    assert [c.spec.identity.config_label for c in cells] == ["handcrafted+logreg"] * 2 + ["handcrafted+rf"] * 2
    assert [c.spec.identity.curve for c in cells] == [{"axis": "label_fraction", "value": 0.1}, None] * 2
    assert [(c.spec.settings["head"], c.spec.settings["label_fraction"]) for c in cells] == [
        ("logreg", 0.1), ("logreg", 1.0), ("rf", 0.1), ("rf", 1.0)]
    assert "label fractions" in error_of(base(label_fractions=[0.0]))
    shots = expand_grid(parse_config(base(k_shots=[5, 10])))
    assert [c.spec.label for c in shots] == ["handcrafted+rf+5shot", "handcrafted+rf+10shot"]
    assert "not both" in error_of(base(k_shots=[5], label_fractions=[0.1]))


def test_zeroshot_prompt_sets_must_suit_the_model():
    msg = error_of({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "zeroshot", "models": ["clip_vit_b32"], "prompt_sets": ["simple"]}]})
    assert "grid[0] (zeroshot, model 'clip_vit_b32')" in msg and "not for dual models" in msg
    cells = expand_grid(parse_config({"experiment": "x", "datasets": ["d"], "grid": [
        {"paradigm": "zeroshot", "models": ["ollama:llava:13b"], "prompt_sets": ["simple", "abcde"]}]}))
    assert [c.spec.label for c in cells] == ["ollama:llava:13b+simple", "ollama:llava:13b+abcde"]
    assert cells[0].spec.settings["prompt_set"] == "simple" and cells[0].spec.settings["prompt_set_hash"]


def test_plugin_imports_must_exist():
    msg = error_of({"experiment": "x", "datasets": ["d"], "imports": ["no_such_plugin_module"],
                    "grid": [{"paradigm": "fake", "models": ["m"]}]})
    assert "no_such_plugin_module" in msg
