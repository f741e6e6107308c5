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
    raw = _config(variables={"bb": "handcraftd"}, grid=[{**PROBE, "backbones": ["${bb}"]}])
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert "handcraftd" in str(info.value) and "variables used: bb=handcraftd; set one with --var" in str(info.value)


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
