"""dermbench.metrics: subgroup table, Fitzpatrick groups and age bands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermbench import metrics as M


@pytest.mark.parametrize(
    ("raw", "group"),
    [
        ("I", "I-II"), ("ii", "I-II"), ("III", "III-IV"), ("IV", "III-IV"), ("V", "V-VI"), ("VI", "V-VI"),
        (1, "I-II"), (2, "I-II"), (3, "III-IV"), (4, "III-IV"), (5, "V-VI"), (6, "V-VI"),
        (3.0, "III-IV"), (np.int64(6), "V-VI"), (np.float64(1.0), "I-II"), ("5", "V-VI"), ("2.0", "I-II"),
        ("12", "I-II"), ("34", "III-IV"), ("56", "V-VI"), (12, "I-II"), (56, "V-VI"),
        ("I-II", "I-II"), ("FST3", "III-IV"), ("type IV", "III-IV"),
        (-1, None), ("-1", None), (None, None), (float("nan"), None), ("unknown", None), ("", None),
    ],
)
def test_fitzpatrick_group(raw, group):
    assert M.fitzpatrick_group(raw) == group


def test_fitzpatrick_group_containers_and_errors():
    series = pd.Series([1, -1, 5], index=[10, 11, 12], name="fitzpatrick_scale")
    mapped = M.fitzpatrick_group(series)
    assert mapped.index.tolist() == [10, 11, 12] and mapped.tolist() == ["I-II", None, "V-VI"]
    assert M.fitzpatrick_group(["VI", 2.0, None]) == ["V-VI", "I-II", None]
    for bad in (7, 0, 3.5, "VII", "dark", True):
        with pytest.raises(ValueError, match="Fitzpatrick"):
            M.fitzpatrick_group(bad)


def test_fitzpatrick17k_fixture_values(fixtures_raw):
    frame = pd.read_csv(fixtures_raw / "fitzpatrick17k" / "fitzpatrick17k.csv")
    groups = M.fitzpatrick_group(frame["fitzpatrick_scale"])
    assert set(groups.dropna()) == {"I-II", "III-IV", "V-VI"}
    assert int(groups.isna().sum()) == int((frame["fitzpatrick_scale"] == -1).sum())


def test_age_band():
    assert M.age_band([5, 29.9, 30, 49, 50, 69, 70, 95]) == ["<30", "<30", "30-49", "30-49", "50-69",
                                                             "50-69", "70+", "70+"]
    assert M.age_band([None, float("nan"), -1, ""]) == [None, None, None, None]
    assert M.age_band(45, edges=(40, 60)) == "40-59"
    assert M.age_band(pd.Series([35.0], index=["a"])).to_dict() == {"a": "30-49"}
    with pytest.raises(ValueError, match="age"):
        M.age_band(["forty"])
    with pytest.raises(ValueError, match="increasing"):
        M.age_band([40], edges=(50, 30))


def test_subgroup_table():
    rng = np.random.default_rng(0)
    n = 200
    y = (rng.random(n) < 0.4).astype(int)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    sex = np.array(["female"] * 100 + ["male"] * 80 + [None] * 10 + [""] * 10, dtype=object)
    sex[190:] = "other"  # 10 images of a small group
    y[190:] = 0          # ... with one class only
    sex[180:185] = np.nan
    table = M.subgroup_table(y, p, sex, threshold=0.5, min_n=30, name="sex")
    assert list(table.columns) == ["subgroup", "value", "n", "n_malignant", "n_benign", "auroc",
                                   "sensitivity", "specificity", "balanced_accuracy", "flag"]
    assert table["value"].tolist() == ["female", "male", "other", "unknown"]
    assert (table["subgroup"] == "sex").all()
    assert table["n"].tolist() == [100, 80, 10, 10]
    assert table["n"].sum() == n
    rows = table.set_index("value")
    assert rows.loc["female", "flag"] == "ok" and rows.loc["male", "flag"] == "ok"
    assert rows.loc["other", "flag"] == "small" and rows.loc["unknown", "flag"] == "small"
    assert rows.loc["other", "auroc"] is None and rows.loc["other", "sensitivity"] is None
    female = np.arange(100)
    expected = M.at_threshold(y[female], p[female], 0.5)
    assert rows.loc["female", "sensitivity"] == pytest.approx(expected["sensitivity"])
    assert rows.loc["female", "auroc"] == pytest.approx(M.threshold_free(y[female], p[female])["auroc"])
    assert rows.loc["female", "n_malignant"] == int(y[female].sum())


def test_subgroup_table_orders_numbers_naturally_and_flags_missing_class():
    y = np.array([0, 1] * 20)
    p = np.linspace(0, 1, 40)
    bands = ["10-19"] * 10 + ["2-9"] * 30
    table = M.subgroup_table(y, p, bands, threshold=0.5, min_n=5, name="band")
    assert table["value"].tolist() == ["2-9", "10-19"]
    only_benign = M.subgroup_table(np.zeros(40, int), p, ["a"] * 40, threshold=0.5, min_n=5)
    assert only_benign["flag"].tolist() == ["small"]
    with pytest.raises(ValueError, match="one entry per image"):
        M.subgroup_table(y, p, ["a"], threshold=0.5)


def test_age_bands_sort_in_age_order():
    import numpy as np

    from dermbench.metrics import age_band, subgroup_table

    ages = np.array([80, 25, 40, 60, 75, 20, 45, 65])
    table = subgroup_table(np.array([0, 1] * 4), np.linspace(0.1, 0.9, 8), age_band(ages), threshold=0.5)
    assert list(table["value"]) == ["<30", "30-49", "50-69", "70+"]
