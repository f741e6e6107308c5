"""`dermbench score` validates strictly; finalize_cell writes a complete, correct record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dermbench.data.contract import load_dataset
from dermbench.runs.evaluate import finalize_cell
from dermbench.runs.record import RunRecorder, is_complete
from dermbench.runs.score import PredictionsError, validate_against_truth

from test_contract import make_clean


@pytest.fixture()
def dataset_dir(tmp_path: Path) -> Path:
    return make_clean(tmp_path / "d", n=10)


def _scores(ds, split, seed=0):
    df = ds.split(split)
    rng = np.random.default_rng(seed)
    p = np.clip(0.3 * df["label"].to_numpy() + rng.uniform(0, 0.7, len(df)), 0, 1)
    return pd.DataFrame({"img_id": df["img_id"], "p_malignant": p})


def test_score_accepts_good_file_and_matches_sklearn(dataset_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(dataset_dir, quiet=True)
    scores = _scores(ds, "test")
    path = tmp_path / "pred.csv"
    scores.to_csv(path, index=False)
    out = subprocess.run([sys.executable, "-m", "dermbench", "score", str(path), "--truth", str(dataset_dir),
                          "--json", str(tmp_path / "m.json"), "--n-boot", "200"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "auroc" in out.stdout
    result = json.loads((tmp_path / "m.json").read_text())
    expected = roc_auc_score(ds.split("test")["label"], scores["p_malignant"])
    assert abs(result["metrics"]["auroc"]["value"] - expected) < 1e-9
    assert result["bootstrap"]["unit"] == "patient"


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: pd.concat([d, d.iloc[:1]]), "duplicate img_id"),
    (lambda d: d.iloc[1:], "have no prediction"),
    (lambda d: pd.concat([d, pd.DataFrame({"img_id": ["zzz.jpg"], "p_malignant": [0.5]})]), "not in the ground truth"),
    (lambda d: d.assign(p_malignant=d["p_malignant"].astype(object).where(d.index != 0, "nan")), "empty or NaN"),
    (lambda d: d.assign(p_malignant=d["p_malignant"].where(d.index != 0, 1.7)), r"outside \[0, 1\]"),
    (lambda d: d.assign(p_malignant=d["p_malignant"].astype(object).where(d.index != 0, "high")), "not numbers"),
    (lambda d: d.rename(columns={"p_malignant": "score"}), "missing column 'p_malignant'"),
])
def test_score_rejects_malformed_predictions(dataset_dir: Path, tmp_path: Path, mutate, needle: str) -> None:
    ds = load_dataset(dataset_dir, quiet=True)
    bad = mutate(_scores(ds, "test"))
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    out = subprocess.run([sys.executable, "-m", "dermbench", "score", str(path), "--truth", str(dataset_dir)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert needle.split("\\")[0] in out.stderr or pytest.fail(out.stderr)
    assert "Traceback" not in out.stderr


def test_score_cli_rejects_negative_n_boot_without_traceback(dataset_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(dataset_dir, quiet=True)
    path = tmp_path / "pred.csv"
    _scores(ds, "test").to_csv(path, index=False)
    out = subprocess.run([sys.executable, "-m", "dermbench", "score", str(path), "--truth", str(dataset_dir),
                          "--n-boot", "-5"], capture_output=True, text=True)
    assert out.returncode == 2 and "--n-boot" in out.stderr and "Traceback" not in out.stderr


def test_ids_without_extension_are_accepted(dataset_dir: Path) -> None:
    ds = load_dataset(dataset_dir, quiet=True)
    s = _scores(ds, "test")
    s["img_id"] = s["img_id"].str.replace(".jpg", "", regex=False)
    aligned = validate_against_truth(s, ds.split("test"))
    assert list(aligned["img_id"]) == list(ds.split("test")["img_id"])


def test_finalize_cell_threshold_from_validation_and_complete_record(dataset_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(dataset_dir, quiet=True)
    rec = RunRecorder(tmp_path / "cell")
    rec.begin({"paradigm": "unit"})
    metrics = finalize_cell(rec, ds, {"validation": _scores(ds, "validation"), "test": _scores(ds, "test", 1)},
                            threshold_policy="youden", n_boot=100, seed=3, provenance={"weights": "random init"})
    assert is_complete(rec.path)
    assert metrics["threshold"]["chosen_on"] == "validation"
    thr = metrics["threshold"]["value"]
    test = pd.read_csv(rec.path / "predictions_test.csv")
    assert list(test.columns[:4]) == ["img_id", "label", "p_malignant", "pred"]
    assert ((test["p_malignant"] >= thr).astype(int) == test["pred"]).all()
    assert metrics["splits"]["test"]["bootstrap"]["unit"] == "patient"
    assert metrics["provenance"]["weights"] == "random init"
    assert metrics["provenance"]["dataset_fingerprint"] == ds.fingerprint
    assert (rec.path / "subgroups.csv").exists()
    saved = json.loads((rec.path / "metrics.json").read_text())
    assert saved["splits"]["test"]["metrics"]["auroc"]["value"] == pytest.approx(
        roc_auc_score(test["label"], test["p_malignant"]))


def test_finalize_cell_refuses_missing_scores(dataset_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(dataset_dir, quiet=True)
    rec = RunRecorder(tmp_path / "cell")
    rec.begin({})
    with pytest.raises(ValueError, match="have no score"):
        finalize_cell(rec, ds, {"test": _scores(ds, "test").iloc[1:]})
    assert not is_complete(rec.path)


def test_ids_naming_one_image_twice_are_rejected(dataset_dir: Path) -> None:
    # Regression: "x.jpg" and "x" both resolved to image x, which was then scored twice.
    ds = load_dataset(dataset_dir, quiet=True)
    s = _scores(ds, "test")
    twin = s.iloc[:1].assign(img_id=s["img_id"].iloc[0].replace(".jpg", ""))
    with pytest.raises(PredictionsError, match="more than once under different names"):
        validate_against_truth(pd.concat([s, twin], ignore_index=True), ds.split("test"))


def test_threshold_comes_from_validation_only(dataset_dir: Path, tmp_path: Path) -> None:
    from dermbench.metrics import choose_threshold

    ds = load_dataset(dataset_dir, quiet=True)
    val = _scores(ds, "validation")
    expected = choose_threshold("youden", ds.split("validation")["label"].to_numpy(),
                                val.set_index("img_id").loc[ds.split("validation")["img_id"], "p_malignant"].to_numpy())
    chosen = []
    for test_seed in (1, 2):  # different test scores must not move the threshold
        rec = RunRecorder(tmp_path / f"cell{test_seed}")
        rec.begin({})
        metrics = finalize_cell(rec, ds, {"validation": val, "test": _scores(ds, "test", test_seed)},
                                threshold_policy="youden", n_boot=0)
        chosen.append(metrics["threshold"]["value"])
    assert chosen == [expected, expected]


def test_malformed_policy_is_an_error_and_fallback_is_labelled(dataset_dir: Path, tmp_path: Path) -> None:
    from dermbench.metrics import ThresholdPolicyError

    ds = load_dataset(dataset_dir, quiet=True)
    rec = RunRecorder(tmp_path / "cell")
    rec.begin({})
    scores = {"validation": _scores(ds, "validation"), "test": _scores(ds, "test")}
    # Regression: a typo fell back silently to 0.5 and was recorded as "chosen on validation".
    with pytest.raises(ThresholdPolicyError, match="unknown threshold policy"):
        finalize_cell(rec, ds, scores, threshold_policy="youdn", n_boot=0)
    assert not is_complete(rec.path)
    metrics = finalize_cell(rec, ds, {"test": scores["test"]}, threshold_policy="sensitivity:0.9", n_boot=0)
    assert metrics["threshold"]["value"] == 0.5
    assert metrics["threshold"]["chosen_on"] == "fallback fixed:0.5" and metrics["threshold"]["note"]
    fixed = finalize_cell(rec, ds, scores, threshold_policy="Fixed:0.3", n_boot=0)
    assert fixed["threshold"] == {"policy": "fixed:0.3", "value": 0.3, "chosen_on": "fixed", "note": ""}
