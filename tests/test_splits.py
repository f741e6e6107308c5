"""Grouped, stratified splits on the full real HAM10000 metadata and on small synthetic frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermbench.data.sources.labels import apply_label_table
from dermbench.data.sources.raw import read_published_csv
from dermbench.data.sources.ham10000 import LABEL_TABLE as HAM_TABLE
from dermbench.data.splits import (SplitSpec, group_overlap, grouped_stratified_split, parse_ratios,
                                   split_frame)


@pytest.fixture(scope="module")
def ham_labelled(fixtures_raw):
    df = read_published_csv(fixtures_raw / "ham10000" / "HAM10000_metadata.csv")
    df = df.rename(columns={"image_id": "img_id"})
    df["label_key"] = df["dx"]
    labelled, excluded, _ = apply_label_table(df, HAM_TABLE, "paper", "malignant", "ham10000")
    assert not excluded
    return labelled


def test_ham_label_counts_match_published_classes(ham_labelled):
    assert len(ham_labelled) == 10015
    assert ham_labelled["lesion_id"].nunique() == 7470
    counts = ham_labelled["dx"].value_counts()
    assert (counts["mel"], counts["bcc"], counts["akiec"]) == (1113, 514, 327)
    assert (ham_labelled["benign_malignant"] == "malignant").sum() == 1954
    assert (ham_labelled["benign_malignant"] == "benign").sum() == 8061


def test_ham_grouped_split_no_overlap_and_ratios(ham_labelled):
    spec = SplitSpec((0.75, 0.125, 0.125), group_by=("lesion_id",))
    names, policy = split_frame(ham_labelled, spec, seed=42)
    frame = ham_labelled.assign(split=names.to_numpy())
    assert group_overlap(frame, "lesion_id") == {}
    fractions = frame["split"].value_counts(normalize=True)
    for split, target in zip(("train", "validation", "test"), spec.ratios):
        assert abs(fractions[split] - target) < 0.01, (split, fractions[split])
    # stratified: malignant prevalence per split within one point of the overall 19.5%
    prevalence = frame.groupby("split")["benign_malignant"].apply(lambda s: (s == "malignant").mean())
    assert (abs(prevalence - 1954 / 10015) < 0.01).all(), prevalence
    assert "grouped by lesion_id" in policy and "seed 42" in policy


def test_split_is_seeded_and_deterministic(ham_labelled):
    spec = SplitSpec((0.75, 0.125, 0.125), group_by=("lesion_id",))
    a, _ = split_frame(ham_labelled, spec, seed=1)
    b, _ = split_frame(ham_labelled, spec, seed=1)
    c, _ = split_frame(ham_labelled, spec, seed=2)
    assert (a == b).all()
    assert (a != c).any()


def test_stratified_by_label_and_extra_column():
    rng = np.random.default_rng(0)
    n = 900
    labels = rng.choice(["benign", "malignant"], size=n, p=[0.7, 0.3])
    tone = rng.choice(["12", "34", "56"], size=n)
    names = grouped_stratified_split(labels, None, (0.7, 0.15, 0.15), seed=3, strata=tone)
    df = pd.DataFrame({"label": labels, "tone": tone, "split": names})
    for (lab, t), sub in df.groupby(["label", "tone"]):
        frac = (sub["split"] == "train").mean()
        assert abs(frac - 0.7) < 0.03, (lab, t, frac)


def test_groups_never_span_splits_with_mixed_label_patients():
    rng = np.random.default_rng(5)
    patients = np.repeat([f"P{i}" for i in range(200)], rng.integers(1, 6, size=200))
    labels = rng.choice(["benign", "malignant"], size=len(patients))
    names = grouped_stratified_split(labels, patients, (0.75, 0.125, 0.125), seed=0)
    df = pd.DataFrame({"patient_id": patients, "split": names})
    assert group_overlap(df, "patient_id") == {}
    assert set(names) == {"train", "validation", "test"}


def test_parse_ratios():
    assert parse_ratios("75/12.5/12.5") == pytest.approx((0.75, 0.125, 0.125))
    assert parse_ratios("0.7,0.15,0.15") == pytest.approx((0.7, 0.15, 0.15))
    with pytest.raises(ValueError, match="three"):
        parse_ratios("80/20")


def test_grouping_survives_missing_ids_and_joins_patient_and_lesion():
    """A patient id missing on a few rows must not turn the whole split image-level (the old rule
    took the first *complete* id column), and rows linked only through a lesion id stay together."""
    rng = np.random.default_rng(1)
    patients = np.repeat([f"P{i}" for i in range(150)], rng.integers(2, 6, size=150)).astype(object)
    lesions = np.asarray([f"L{p}_{k % 2}" for k, p in enumerate(patients)], dtype=object)
    patients[::17] = None  # these rows keep only their lesion id
    frame = pd.DataFrame({"patient_id": patients, "lesion_id": lesions,
                          "benign_malignant": rng.choice(["benign", "malignant"], size=len(patients))})
    frame.loc[3, ["patient_id", "lesion_id"]] = None  # no id at all: its own group
    names, policy = split_frame(frame, SplitSpec((0.7, 0.15, 0.15), group_by=("patient_id", "lesion_id")))
    frame["split"] = names
    assert group_overlap(frame, "patient_id") == {}
    assert group_overlap(frame, "lesion_id") == {}
    assert "patient_id + lesion_id" in policy and "1 row(s) without an id" in policy


def test_bootstrap_groups_namespace_by_source_and_keep_rows_without_ids():
    import pandas as pd

    from dermbench.data.splits import bootstrap_groups

    frame = pd.DataFrame({"patient_id": ["17", "17", None, "17", None],
                          "lesion_id": ["a", "b", "b", None, None],
                          "source": ["ham", "ham", "ham", "pad", "pad"]})
    keys, unit = bootstrap_groups(frame)
    # rows 0-2 are one unit (patient 17 of ham; row 2 shares lesion b), pad's patient 17 is another,
    # the last row has no id and is resampled alone
    assert keys[0] == keys[1] == keys[2]
    assert len({keys[0], keys[3], keys[4]}) == 3
    assert unit == "group"
    assert bootstrap_groups(pd.DataFrame({"img_id": ["x"]})) == (None, "image")
    keys, unit = bootstrap_groups(pd.DataFrame({"patient_id": ["p1", "p1", "p2"]}))
    assert unit == "patient" and keys[0] == keys[1] != keys[2]
