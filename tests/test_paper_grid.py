"""The paper grid (configs/paper.yaml) covers every published cell of the study, checked through the
one mapping table (dermbench.reference); config variables set a path once."""

from __future__ import annotations

import pytest

from dermbench.errors import ConfigError
from dermbench.runner.config import parse_config

PROBE = {"paradigm": "probe", "backbones": ["handcrafted"], "heads": ["rf"]}


def _config(**top) -> dict:
    return {"experiment": "x", "datasets": ["d1"], "grid": [PROBE], **top}


# --- variables: a value set once, used as ${name} ------------------------------------------------
def test_variables_are_substituted_and_overridden_by_var():
    raw = _config(variables={"root": "/data/study", "w": "models/derm-foundation"},
                  datasets=["${root}/ham10000", "plain"],
                  grid=[{**PROBE, "settings": {"weights": "${w}"}}])
    config = parse_config(raw)
    assert [d.path for d in config.datasets] == ["/data/study/ham10000", "plain"]
    assert config.grid[0].settings["weights"] == "models/derm-foundation"
    assert config.variables == {"root": "/data/study", "w": "models/derm-foundation"}
    config = parse_config(raw, variables={"root": "/elsewhere"})
    assert config.datasets[0].path == "/elsewhere/ham10000" and config.variables["root"] == "/elsewhere"
    assert raw["datasets"][0] == "${root}/ham10000"  # the caller's mapping is not changed


@pytest.mark.parametrize("raw, overrides, message", [
    (_config(variables={"root": "/d"}, datasets=["${rot}/x"]), None, "datasets[0]: ${rot} is not a declared variable"),
    (_config(datasets=["${root}/x"]), None, "${root} is not a declared variable (variables: none)"),
    (_config(variables={"1st": "a"}), None, "'1st' is not a valid name"),
    (_config(variables={"a": ["x"]}), None, "variables.a: a variable is one value"),
    (_config(variables={"a": "x", "b": "${a}/y"}), None, "cannot use other variables"),
    (_config(variables={"root": "/d"}), {"rooot": "/e"}, "--var rooot: the config declares no variable 'rooot'"),
    (_config(variables="root"), None, "variables must be a mapping"),
])
def test_variable_mistakes_are_config_errors_naming_the_key(raw, overrides, message):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, variables=overrides)
    assert message in str(info.value)


def test_a_later_error_names_the_variables_used():
    raw = _config(variables={"head": "logreq"}, grid=[{**PROBE, "heads": ["${head}"]}])
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert "logreq" in str(info.value) and "variables used: head=logreq; set one with --var" in str(info.value)


def test_cli_var_option(tmp_path, capsys):
    from dermbench.cli.main import main

    config = tmp_path / "grid.yaml"
    config.write_text("experiment: x\nvariables: {name: d1}\ndatasets: ['${name}']\n"
                      "grid: [{paradigm: probe, backbones: [handcrafted], heads: [rf]}]\n")
    assert main(["run", str(config), "--dry-run", "--var", "name=other"]) == 0
    out = capsys.readouterr().out
    assert "other" in out and "d1" not in out.split("cell(s)")[1]
    assert main(["run", str(config), "--dry-run", "--var", "name"]) == 2
    assert "--var expects NAME=VALUE" in capsys.readouterr().err
    assert main(["validate", str(config), "--var", "nam=x"]) == 2
    assert "declares no variable 'nam'" in capsys.readouterr().err


# --- the mapping table -----------------------------------------------------------------------------
def test_every_published_cell_maps_to_one_cell_of_ours():
    from dermbench.reference import STUDY_KEYS, study_cells, study_results

    results = study_results()
    assert len(results) == 2185 and set(results["project"]) == {"cnn_vit", "embeddings", "vlm"}
    cells = study_cells()
    assert len(cells) == len(results[STUDY_KEYS].drop_duplicates()) == 787
    assert set(cells["paradigm"]) == {"finetune", "probe", "zeroshot"}
    assert set(cells["dataset_folder"]) == {"ham10000", "isic2018", "isic2024", "pad_ufes_20", "hc", "ddi", "sd198",
                                            "merged_clinic", "merged_dermatoscopic", "merged"}
    # the study's hyper-parameter searches are validation numbers; everything else is test
    assert set(cells[cells["setting"].str.startswith("hpo_")]["split"]) == {"validation"}
    assert set(cells[~cells["setting"].str.startswith("hpo_")]["split"]) == {"test"}
    row = cells[(cells["model"] == "resnet18") & (cells["setting"] == "unbalanced") & (cells["dataset"] == "ISIC18")]
    assert row[["paradigm", "config_label", "dataset_folder"]].values.tolist() == [
        ["finetune", "torchvision:resnet18+unbalanced+study", "isic2018"]]


def test_a_dual_encoder_under_a_prompt_setting_is_its_one_dual_encoder_cell():
    """The study's dual encoders ignore the prompt config; their rows under the generative settings
    repeat the vlm_dual_encoder numbers and map to the same cell of ours."""
    from dermbench.reference import study_cells, study_results

    cells = study_cells()
    medsiglip = cells[(cells["model"] == "google/medsiglip-448") & (cells["dataset"] == "HAM10000")]
    assert set(medsiglip["setting"]) == {"vlm_dual_encoder", "vlm_prompt_simple", "vlm_prompt_patient_info"}
    assert set(medsiglip["config_label"]) == {"medsiglip_448+vlm_dual_encoder"}
    results = study_results()
    values = results[(results["model"] == "google/medsiglip-448") & (results["dataset"] == "HAM10000")]
    assert values.groupby("metric")["value"].nunique().eq(1).all()
    # apart from those repeats, no two published cells share a cell of ours
    distinct = cells[~cells["dual_encoder"] | (cells["setting"] == "vlm_dual_encoder")]
    assert not distinct.duplicated(["paradigm", "config_label", "dataset_folder"]).any()


def test_local_weights_folder_name_is_not_part_of_the_match():
    from dermbench.reference import comparable_label

    assert comparable_label("derm_foundation+rf+study+w-derm-foundation", "derm_foundation") == "derm_foundation+rf+study"
    assert comparable_label("derm_foundation+w-my_copy+rf", "derm_foundation") == "derm_foundation+rf"
    # other models keep their weights part: a cell with other weights is another configuration
    assert comparable_label("dinov2_giant+rf+study+w-x", "dinov2_giant") == "dinov2_giant+rf+study+w-x"
    assert comparable_label("dinov2_giant+rf+random", "dinov2_giant") == "dinov2_giant+rf+random"


def test_metric_map_compares_vlm_macro_f1_with_the_study_rule():
    from dermbench.reference import metric_map

    assert metric_map("vlm")["macro_f1"].ours == "study_macro_f1"
    assert metric_map("cnn_vit")["macro_f1"].ours == "macro_f1"
    assert metric_map("embeddings")["roc_auc"].ours == "auroc"
    assert metric_map("vlm")["precision_malignant"].ours is None and metric_map("vlm")["precision_malignant"].why
    assert metric_map("cnn_vit")["optuna_best_macro_f1"].ours is None


def test_study_test_counts_are_the_published_supports():
    from dermbench.reference import study_test_counts

    counts = study_test_counts()
    assert counts["isic2018"] == (909, 171) and counts["ham10000"] == (963, 173) and counts["ddi"] == (19, 8)
    assert len(counts) == 10


# --- the grid ----------------------------------------------------------------------------------------
def study_repo(tmp_path):
    """A stand-in for the study's repository: its four prompt files, in the study's format (our own
    placeholder wording; a user points study_repo at the real clone)."""
    folder = tmp_path / "derm-bench" / "derm-lesion-foundation_vlms-classification" / "configuration_yaml"
    folder.mkdir(parents=True)
    (folder / "vlm_dual_encoder.yaml").write_text("labels: [benign, malignant]\n")
    (folder / "vlm_prompt_simple.yaml").write_text('system_prompt: "You classify skin lesions."\n'
                                                   'user_prompt: "Answer benign or malignant."\n')
    (folder / "vlm_prompt_patient_info.yaml").write_text('system_prompt: "You classify skin lesions; use the '
                                                         'patient information."\nuser_prompt: ""\n')
    (folder / "vlm_prompt_abcde_rules.yaml").write_text('system_prompt: "You classify skin lesions."\n'
                                                        'user_prompt: "Use the ABCDE rules; answer benign or malignant."\n')
    return tmp_path / "derm-bench"


def _dry_run_rows(out: str) -> list[dict[str, str]]:
    """The cell rows of `dermbench run --dry-run`'s table, by column name."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("paradigm "))
    header = lines[start].split()
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("cells per paradigm"):
            break
        rows.append(dict(zip(header, line.split())))
    return rows


def test_paper_dry_run_lists_a_cell_for_every_published_row(tmp_path, capsys):
    """Done-when of issue 11: `dermbench run configs/paper.yaml --dry-run` lists a cell for every
    (paradigm, setting, model, dataset) of study_results.csv, checked through the mapping table;
    the datasets need not exist (the dry run says they are missing)."""
    from dermbench.cli.main import main
    from dermbench.reference import comparable_label, study_cells

    repo = study_repo(tmp_path)
    assert main(["run", "configs/paper.yaml", "--dry-run", "--var", f"study_repo={repo}",
                 "--data-root", str(tmp_path / "nowhere"), "--runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    rows = _dry_run_rows(out)
    listed = {(r["paradigm"], comparable_label("+".join(p for p in (r["model"], r["variant"]) if p != "-"), r["model"]),
               r["dataset"]) for r in rows}
    assert len(listed) == len(rows)  # one row per cell
    cells = study_cells()
    wanted = set(zip(cells["paradigm"], cells["config_label"], cells["dataset_folder"]))
    missing = sorted(wanted - listed)
    assert not missing, f"{len(missing)} published cell(s) have no cell in the paper grid, e.g. {missing[:3]}"
    assert f"{len(rows)} cell(s)" in out and {r["state"] for r in rows} == {"todo"}
    assert "dataset folders not found yet" in out and str(tmp_path / "nowhere" / "ham10000") in out
    # the grid is the study's configuration: finetune 15 x 2 x 10, probe 5 x 4 x 10 + the searches (ddi
    # RF/XGBoost/SVM, merged MLP), dual encoders 4 x 10, generative VLMs 10 x 3 prompt files x 10
    by_paradigm = {p: sum(r["paradigm"] == p for r in rows) for p in ("finetune", "probe", "zeroshot")}
    assert by_paradigm == {"finetune": 300, "probe": 200 + 15 + 5, "zeroshot": 40 + 300}
    # Derm Foundation's weights come from the one variable, in every probe block
    assert {r["variant"].rsplit("+", 1)[-1] for r in rows if r["model"] == "derm_foundation"} == {"w-derm-foundation"}


def test_paper_grid_needs_the_study_prompt_files_and_says_how_to_set_them(tmp_path):
    from dermbench.runner.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config("configs/paper.yaml", {"study_repo": str(tmp_path / "no-clone")})
    message = str(info.value)
    assert "vlm_prompt_simple.yaml" in message and "does not exist" in message
    assert f"study_repo={tmp_path / 'no-clone'}" in message and "--var NAME=VALUE" in message


def test_paper_grid_variables_set_weights_and_private_dataset_once(tmp_path):
    from dermbench.runner.config import load_config
    from dermbench.runner.grid import expand_grid

    config = load_config("configs/paper.yaml", {"study_repo": str(study_repo(tmp_path)),
                                                "derm_foundation": "/models/derm_foundation_v1",
                                                "hc": "/private/hc"})
    cells = expand_grid(config, data_root=tmp_path / "data")
    derm = [c for c in cells if c.spec.model == "derm_foundation"]
    assert len(derm) == 40 + 3 + 1 and {c.spec.settings["weights"] for c in derm} == {"/models/derm_foundation_v1"}
    assert {c.spec.dataset for c in cells if c.spec.dataset_name == "hc"} == {"/private/hc"}
    assert config.dataset_paths(tmp_path / "data")["ham10000"] == (tmp_path / "data" / "ham10000").absolute()


def test_paper_grid_generative_cells_are_invoked_as_the_study_invoked_them(tmp_path):
    """STUDY.md §6.4: every local instruct model got max_new_tokens=100 and the image at full size;
    Ollama got /api/generate with the image re-encoded at Pillow's default JPEG quality, full size."""
    from dermbench.runner.config import load_config
    from dermbench.runner.grid import expand_grid

    cells = expand_grid(load_config("configs/paper.yaml", {"study_repo": str(study_repo(tmp_path))}),
                        data_root=tmp_path / "data")
    generative = [c.spec for c in cells if c.spec.paradigm == "zeroshot" and c.spec.model not in
                  ("clip_vit_b32", "clip_vit_l14", "medsiglip_448", "biomedclip")]
    assert len(generative) == 300
    local = [s for s in generative if not s.model.startswith("ollama:")]
    ollama = [s for s in generative if s.model.startswith("ollama:")]
    assert len(local) == len(ollama) == 150
    assert {(s.settings["max_new_tokens"], s.settings["max_image_side"]) for s in local} == {(100, None)}
    assert {(s.settings["ollama_api"], s.settings["max_image_side"], s.settings["jpeg_quality"])
            for s in ollama} == {("generate", None, 75)}
