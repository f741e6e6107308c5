"""Issue 14, item 7: one safe YAML loader for every YAML file users give dermbench (configs,
prompt sets, mapping tables, merge configs, --set values): duplicate keys and alias bombs are
refused with a message naming the line."""

from __future__ import annotations

import time

import pytest
import yaml

from dermbench.errors import ConfigError

MINIMAL = """\
experiment: e
datasets: [d]
grid:
  - paradigm: finetune
    models: [resnet10t]
"""

BOMB = """\
experiment: e
datasets: [d]
grid:
  - paradigm: finetune
    models: [resnet10t]
    settings:
      lr: 0.001
      notes:
        a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
        b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
        c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
        d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
        e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
        f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
        g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
        h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
        i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


# -- item 7: one safe YAML loader ----------------------------------------------------------------------

def test_yaml_loader_refuses_duplicate_keys_and_alias_bombs_naming_the_line():
    from dermbench.utils.yamlio import load_yaml

    with pytest.raises(yaml.YAMLError, match=r"line 4: duplicate key 'seeds' \(first given on line 2\)"):
        load_yaml("a: 1\nseeds: [1]\nb: 2\nseeds: [2]\n")
    with pytest.raises(yaml.YAMLError, match=r"line 3: duplicate key 'lr'"):
        load_yaml("outer:\n  lr: 1\n  lr: 2\n")
    t0 = time.perf_counter()
    with pytest.raises(yaml.YAMLError, match=r"line \d+: aliases \(\*name\) expand this document past"):
        load_yaml(BOMB)
    assert time.perf_counter() - t0 < 2.0
    with pytest.raises(yaml.YAMLError, match="recursive"):
        load_yaml("a: &x [1, *x]\n")
    # reasonable reuse and merge keys are fine
    data = load_yaml("base: &base {lr: 0.1, epochs: 2}\nrun: {<<: *base, lr: 0.2}\nalso: *base\n")
    assert data["run"] == {"lr": 0.2, "epochs": 2} and data["also"] == {"lr": 0.1, "epochs": 2}
    assert load_yaml("") is None


def test_config_with_a_duplicate_key_or_an_alias_bomb_is_a_config_error(tmp_path, capsys):
    from dermbench.cli.main import main
    from dermbench.runner.config import load_config

    dup = tmp_path / "dup.yaml"
    dup.write_text(MINIMAL + "seeds: [1]\nseeds: [2]\n")
    with pytest.raises(ConfigError, match=r"line 7: duplicate key 'seeds'"):
        load_config(dup)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    t0 = time.perf_counter()
    assert main(["validate", str(bomb)]) == 2
    assert time.perf_counter() - t0 < 5.0
    err = capsys.readouterr().err
    assert "bomb.yaml" in err and "aliases" in err and "line " in err


def test_every_user_yaml_goes_through_the_safe_loader(tmp_path):
    from dermbench.data.merge import load_merge_config
    from dermbench.data.sources.csv_source import load_mapping
    from dermbench.errors import MergeError, PromptSetError, SourceFormatError, UsageError
    from dermbench.paradigms.zeroshot.prompts import load_prompt_file

    prompt = tmp_path / "p.yaml"
    prompt.write_text("kind: generative\nprompt: a\nprompt: b\n")
    with pytest.raises(PromptSetError, match="line 3: duplicate key 'prompt'"):
        load_prompt_file(prompt)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("labels:\n  nevus: benign\n  nevus: malignant\n")
    with pytest.raises(SourceFormatError, match="line 3: duplicate key 'nevus'"):
        load_mapping(mapping)
    merge = tmp_path / "merge.yaml"
    merge.write_text("merges: {}\nmerges: {}\n")
    with pytest.raises(MergeError, match="line 2: duplicate key 'merges'"):
        load_merge_config(merge)
    from dermbench.cli.cells import parse_set

    levels = ["a: &a [" + ", ".join(["lol"] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    with pytest.raises(UsageError, match="aliases"):
        parse_set(["notes={" + ", ".join(levels) + "}"])


