"""Small samples: bounded intervals with a note, no winner declared from overlapping CIs, small
test sets marked, identical runs shown as one run (issue 15, done-when: n = 6)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dermbench.metrics import delong_test, paired_bootstrap
from dermbench.metrics.small_sample import SmallSampleRule
from dermbench.report.tables import leaderboard, leaderboard_markdown, overall_best, seed_summary, verdict

Y6 = np.array([0, 0, 0, 1, 1, 1])


def test_delong_on_six_images_is_bounded_and_says_the_approximation_is_poor():
    # a perfect model against a nearly inverted one: the normal interval would run to 1.197
    result = delong_test(Y6, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0.9, 0.8, 0.3, 0.35, 0.2, 0.1])
    assert result["diff"] == pytest.approx(8 / 9)
    assert -1.0 <= result["ci_low"] <= result["ci_high"] <= 1.0 and result["ci_high"] == 1.0
    assert result["clipped"] and "clipped to [-1, 1] (normal approximation gave [0.581, 1.197])" in result["note"]
    assert result["n"] == 6 and result["n_malignant"] == 3
    assert "small sample (n=6, 3 malignant, 3 benign" in result["note"]
    assert "normal approximation of DeLong's test is poor" in result["note"]
    large = delong_test(np.r_[np.zeros(150), np.ones(150)], np.r_[np.linspace(0, .6, 150), np.linspace(.4, 1, 150)],
                        np.r_[np.linspace(0, .7, 150), np.linspace(.3, 1, 150)])
    assert large["note"] == "" and not large["clipped"]  # nothing to say about 300 images, 150 of each class


def test_paired_bootstrap_on_six_images_is_bounded_with_a_note():
    result = paired_bootstrap(Y6, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0.9, 0.8, 0.3, 0.35, 0.2, 0.1], n_boot=200, seed=1)
    assert -1.0 <= result["ci_low"] <= result["ci_high"] <= 1.0
    assert "small sample (n=6" in result["note"]
    assert "distinct values: the interval's bounds are coarse" in result["note"]  # 6 images: few possible AUROCs


def _results(entries: dict[str, list[float]], n: int = 6, n_malignant: int = 3, width: float = 0.3) -> pd.DataFrame:
    rows = []
    for entry, values in entries.items():
        for seed, value in enumerate(values, start=1):
            rows.append({"paradigm": "probe", "entry": entry, "config_label": entry, "curve_axis": None,
                         "curve_value": None, "dataset": "ddi", "split": "test", "metric": "auroc", "seed": seed,
                         "split_seed": None, "value": value, "ci_low": max(0.0, value - width),
                         "ci_high": min(1.0, value + width), "n": n, "n_malignant": n_malignant,
                         "n_benign": n - n_malignant})
    return pd.DataFrame(rows)


def test_six_image_leaderboard_marks_the_test_set_and_declares_no_winner():
    summary = seed_summary(_results({"probe/a": [0.9], "probe/b": [0.7], "probe/c": [0.2]}))
    board = leaderboard(summary, "ddi", "auroc", also=())
    assert list(board["entry"]) == ["probe/a", "probe/b", "probe/c"]
    assert all("small sample (n=6, 3 malignant" in note for note in board["small_test_set"])
    assert list(board["tied_within_ci"]) == [True, True, False]  # c's CI [0, 0.5] misses a's [0.6, 1]
    assert verdict(board).startswith("no winner: probe/a is first, tied within CI with probe/b (")
    md = leaderboard_markdown(board, "ddi", "auroc")
    assert "| 1 (tied within CI) | probe/a |" in md and "Small test set" in md and "no winner" in md
    best = overall_best(summary, "auroc")
    row = best[best["paradigm"] == "all"].iloc[0]
    assert row["best"] == "probe/a" and row["winner"] == "" and row["verdict"] == "tied within CI"
    assert row["small_test_set"].startswith("small sample (n=6")


def test_a_winner_needs_separated_intervals_and_a_large_test_set_is_not_marked():
    summary = seed_summary(_results({"probe/a": [0.95], "probe/b": [0.6]}, n=400, n_malignant=120, width=0.03))
    best = overall_best(summary, "auroc").iloc[0]
    assert best["winner"] == "probe/a" and best["verdict"].startswith("best") and best["small_test_set"] == ""
    strict = overall_best(summary, "auroc", rule=SmallSampleRule(min_images=500, min_positives=20)).iloc[0]
    assert strict["small_test_set"].startswith("small sample (n=400")  # the thresholds are configurable


def test_identical_seeds_are_one_run_not_sd_zero():
    summary = seed_summary(_results({"probe/fixed": [0.8, 0.8, 0.8], "probe/varies": [0.8, 0.7, 0.9]}))
    fixed = summary[summary["entry"] == "probe/fixed"].iloc[0]
    varies = summary[summary["entry"] == "probe/varies"].iloc[0]
    assert fixed["identical_runs"] and math.isnan(fixed["sd"]) and fixed["runs"] == "1 run (3 seeds identical)"
    assert not varies["identical_runs"] and varies["sd"] == pytest.approx(0.1) and varies["runs"] == "3 seeds"
    md = leaderboard_markdown(leaderboard(summary, "ddi", "auroc", also=()), "ddi", "auroc")
    assert "0.000 | 3" not in md and "| — | 1 run (3 seeds identical) |" in md


def test_seeds_identical_on_each_split_count_once_in_the_spread_over_splits():
    """split_seeds [0, 1, 2] x seeds [1, 2] with a deterministic head: the two seeds of a split are
    one run, so the sd is over the three splits (not over six values of which three are copies,
    which understates it) and the table says so; a head whose seeds differ keeps its six runs."""
    rows = []
    for entry, values in {"probe/fixed": [0.8, 0.8, 0.7, 0.7, 0.9, 0.9],
                          "probe/varies": [0.8, 0.82, 0.7, 0.71, 0.9, 0.88]}.items():
        for k, value in enumerate(values):
            rows.append({"paradigm": "probe", "entry": entry, "config_label": entry, "curve_axis": None,
                         "curve_value": None, "dataset": "ddi", "split": "test", "metric": "auroc",
                         "split_seed": k // 2, "seed": 1 + k % 2, "value": value, "ci_low": value - 0.1,
                         "ci_high": value + 0.1, "n": 200, "n_malignant": 50, "n_benign": 150})
    summary = seed_summary(pd.DataFrame(rows)).set_index("entry")
    fixed, varies = summary.loc["probe/fixed"], summary.loc["probe/varies"]
    assert fixed["n_seeds"] == 3 and fixed["sd"] == pytest.approx(np.std([0.8, 0.7, 0.9], ddof=1))
    assert fixed["value"] == pytest.approx(0.8) and fixed["runs"] == "3 splits (2 seeds identical on each)"
    assert varies["n_seeds"] == 6 and varies["runs"] == "3 splits × 2 seeds"
    assert varies["sd"] == pytest.approx(np.std([0.8, 0.82, 0.7, 0.71, 0.9, 0.88], ddof=1))


def test_seeds_that_coincide_on_some_splits_only_keep_every_run():
    """A head whose seeds differ on one split is not deterministic: its seeds agreeing on the other
    splits (e.g. cross-validation picked the same C) is a coincidence, not one run. Collapsing those
    splits would weigh the splits unequally (mean 0.825 instead of 0.85) and leave the leaderboard
    disagreeing with DeLong, which averages every run of the configuration."""
    rows = []
    for k, value in enumerate([0.8, 0.7, 0.9, 0.9, 0.9, 0.9]):
        rows.append({"paradigm": "probe", "entry": "probe/cv", "config_label": "probe/cv", "curve_axis": None,
                     "curve_value": None, "dataset": "ddi", "split": "test", "metric": "auroc",
                     "split_seed": k // 2, "seed": 1 + k % 2, "value": value, "ci_low": value - 0.1,
                     "ci_high": value + 0.1, "n": 200, "n_malignant": 50, "n_benign": 150})
    row = seed_summary(pd.DataFrame(rows)).iloc[0]
    assert row["n_seeds"] == 6 and row["runs"] == "3 splits × 2 seeds"
    assert row["value"] == pytest.approx(0.85)
    assert row["sd"] == pytest.approx(np.std([0.8, 0.7, 0.9, 0.9, 0.9, 0.9], ddof=1))


def test_a_metric_that_coincides_across_differing_seeds_keeps_every_run():
    """Seeds are one run only when the whole run is identical: a discrete metric equal across two
    seeds whose AUROC differs keeps both runs (its mean over the same runs as every other metric)."""
    rows = []
    for k, (auroc, sens) in enumerate([(0.8, 0.5), (0.82, 0.5), (0.7, 0.4), (0.71, 0.4), (0.9, 0.6), (0.88, 0.7)]):
        for metric, value in (("auroc", auroc), ("sens_at_spec90", sens)):
            rows.append({"paradigm": "probe", "entry": "probe/rf", "config_label": "probe/rf", "curve_axis": None,
                         "curve_value": None, "dataset": "ddi", "split": "test", "metric": metric,
                         "split_seed": k // 2, "seed": 1 + k % 2, "value": value, "ci_low": value - 0.1,
                         "ci_high": value + 0.1, "n": 200, "n_malignant": 50, "n_benign": 150})
    summary = seed_summary(pd.DataFrame(rows)).set_index("metric")
    assert list(summary["n_seeds"]) == [6, 6] and set(summary["runs"]) == {"3 splits × 2 seeds"}
    assert summary.loc["sens_at_spec90", "value"] == pytest.approx(np.mean([0.5, 0.5, 0.4, 0.4, 0.6, 0.7]))


def test_rank_marks_read_once():
    from dermbench.report.tables import rank_text

    assert rank_text(1, False, False) == "1"
    assert rank_text(2, True, False) == "2 (tie)"
    assert rank_text(1, False, True) == "1 (tied within CI)"
    assert rank_text(2, True, True) == "2 (tie; tied within CI)"
