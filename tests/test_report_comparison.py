"""`dermbench report` puts our numbers beside the paper's: a report built from run records that match
published rows (fake scores on synthetic datasets named like the study's folders) has the
comparison page and CSV, with the paper's values, ours with CIs, the differences, and every way a
cell was made otherwise than the study's flagged; unmatched cells are listed on both sides."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermbench.data.contract import load_dataset
from dermbench.data.synth import make_synthetic_dataset
from dermbench.reference import study_cells, study_results
from dermbench.report import ReportOptions, build_report
from dermbench.runs.evaluate import finalize_cell
from dermbench.runs.record import RunRecorder, cell_dir

STUDY = {"label_definition": "study", "split_grouping": "ungrouped"}
OWN = {"label_definition": "complete", "split_grouping": "grouped"}

#: (experiment, paradigm, model, variant, dataset folder, seeds, card, threshold policy, extra)
CELLS = [
    # cnn_vit/balanced_aug/convnext_large/ISIC18 (15 published metrics), two seeds: the mean over seeds is compared
    ("paper", "finetune", "torchvision:convnext_large", "balanced_aug+study", "isic2018", (42, 43), STUDY, "fixed:0.5", {}),
    # embeddings/default/derm_foundation/random_forest/ddi: weights from a folder the user named
    ("paper", "probe", "derm_foundation", "rf+study+study_input+w-my_derm_copy", "ddi", (42,), STUDY, "fixed:0.5", {}),
    # embeddings/hpo_ml_validation/dinov2_giant/random_forest/ddi: compared on validation
    ("paper", "probe", "dinov2_giant", "rf+study_hpo+study_input", "ddi", (42,), STUDY, "fixed:0.5",
     {"study_metrics": {"validation": {"study_macro_precision": 0.8}}}),
    # vlm/vlm_prompt_simple/MedGemma-1.5/ISIC18 (12 published metrics): macro-F1 and accuracy by the study's rule
    ("paper", "zeroshot", "medgemma_1_5_4b", "vlm_prompt_simple", "isic2018", (42,), STUDY, "fixed:0.5",
     {"study_metrics": {"test": {"study_macro_f1": 0.41, "study_accuracy": 0.82,
                                 "study_macro_f1_ci_low": 0.30, "study_macro_f1_ci_high": 0.50}}}),
    # the same published cell run otherwise than the study: complete labels, grouped split, Youden
    ("own", "finetune", "torchvision:convnext_large", "balanced_aug+study", "isic2018", (42,), OWN, "youden", {}),
    # dermbench's own configuration: no published row
    ("paper", "finetune", "resnet18", "balanced_aug", "ddi", (42,), STUDY, "fixed:0.5", {}),
]


def _write_cell(runs: Path, ds, experiment, paradigm, model, variant, seed, card, policy, extra, skill) -> None:
    label = f"{model}+{variant}"
    identity = {"model": model, "variant": variant, "config_label": label, "label": label, "curve_axis": None,
                "curve_value": None}
    spec = {"experiment": experiment, "paradigm": paradigm, "model": model, "dataset": str(ds.root), "seed": seed,
            "identity": identity, "settings": {}}
    ds.card.update(card)  # what `prepare --labels/--split` writes into dataset.json
    rng = np.random.default_rng(seed)
    scores = {}
    for split in ("validation", "test"):
        frame = ds.split(split)
        z = skill * (2 * frame["label"].to_numpy() - 1) + rng.normal(0, 1, len(frame))
        scores[split] = pd.DataFrame({"img_id": frame["img_id"], "p_malignant": 1 / (1 + np.exp(-z))})
    recorder = RunRecorder(cell_dir(runs, experiment, paradigm, label, ds.name, seed))
    recorder.begin(spec)
    finalize_cell(recorder, ds, scores, threshold_policy=policy, n_boot=40, seed=seed, cell=spec, extra=extra,
                  provenance={"weights": "none (fake scores)"})


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("comparison")
    for k, name in enumerate(("isic2018", "ddi")):
        make_synthetic_dataset(base / "data" / name, n=120, size=32, seed=k, progress=False)
    runs = base / "runs"
    for k, (experiment, paradigm, model, variant, folder, seeds, card, policy, extra) in enumerate(CELLS):
        ds = load_dataset(base / "data" / folder, quiet=True, check_images=False)
        for seed in seeds:
            _write_cell(runs, ds, experiment, paradigm, model, variant, seed, card, policy, extra, skill=0.8 + k / 4)
    out = base / "report"
    build_report(runs, out, ReportOptions(quiet=True, error_pages=False))
    return out


def _paper(project, setting, model, dataset, metric) -> float:
    r = study_results()
    row = r[(r["project"] == project) & (r["setting"] == setting) & (r["model"] == model) & (r["dataset"] == dataset)
            & (r["metric"] == metric)]
    assert len(row) == 1
    return float(row["value"].iloc[0])


def _ours(report: Path, experiment: str, paradigm: str, label: str, dataset: str, split: str, metric: str) -> list:
    values = []
    folder = cell_dir(report.parent / "runs", experiment, paradigm, label, dataset, 0).parent  # names made file-safe
    for seed_dir in sorted(folder.glob("seed*")):
        m = json.loads((seed_dir / "metrics.json").read_text())["splits"][split]["metrics"][metric]
        values.append((m["value"], m["ci_low"], m["ci_high"]))
    return values


def test_the_report_links_the_comparison_page(report: Path):
    index = (report / "index.html").read_text()
    assert 'href="comparison.html"' in index and "Compared with the paper" in index
    page = (report / "comparison.html").read_text()
    assert "dos Santos et al." in page and "MICCAI 2026" in page and "not dermbench" in page
    assert "study_macro_f1" in page and "<script" not in page
    assert (report / "comparison_with_paper.csv").is_file() and (report / "comparison_with_paper_unmatched.csv").is_file()


def test_matched_values_are_the_papers_beside_ours_with_ci(report: Path):
    rows = pd.read_csv(report / "comparison_with_paper.csv", keep_default_na=False, na_values=[""])
    cnn = rows[(rows["setting"] == "balanced_aug") & (rows["study_model"] == "convnext_large") & (rows["experiment"] == "paper")]
    # every published metric of the cell that has a counterpart of ours (not macro_precision, per-class F1, weighted)
    assert set(cnn["paper_metric"]) == {"accuracy", "macro_f1", "macro_recall", "macro_precision", "sensitivity",
                                        "specificity", "precision_malignant", "precision_benign", "support_malignant",
                                        "support_benign"}
    by_metric = cnn.set_index("paper_metric")
    assert by_metric.loc["precision_malignant", "our_metric"] == "ppv"
    # the mean of PPV and NPV is the study rule's macro precision, which these fake records do not carry
    assert by_metric.loc["macro_precision", "our_metric"] == "study_macro_precision"
    assert pd.isna(by_metric.loc["macro_precision", "our_value"]) and by_metric.loc["macro_precision", "n_seeds"] == 0
    assert by_metric.loc["support_malignant", "paper_value"] == 171 and by_metric.loc["support_malignant", "our_metric"] == "n_malignant"
    assert by_metric.loc["support_malignant", "difference"] == by_metric.loc["support_malignant", "our_value"] - 171
    assert pd.isna(by_metric.loc["support_malignant", "paper_in_ci"])  # a count has no CI
    acc = cnn[cnn["paper_metric"] == "accuracy"].iloc[0]
    assert acc["paper_value"] == _paper("cnn_vit", "balanced_aug", "convnext_large", "ISIC18", "accuracy")
    seeds = _ours(report, "paper", "finetune", "torchvision:convnext_large+balanced_aug+study", "isic2018", "test", "accuracy")
    assert len(seeds) == 2 and acc["n_seeds"] == 2
    assert acc["our_value"] == pytest.approx(np.mean([s[0] for s in seeds]))
    assert acc["ci_low"] == pytest.approx(np.mean([s[1] for s in seeds]))
    assert acc["difference"] == pytest.approx(acc["our_value"] - acc["paper_value"])
    assert acc["paper_in_ci"] == (acc["ci_low"] <= acc["paper_value"] <= acc["ci_high"])
    assert acc["config_label"] == "torchvision:convnext_large+balanced_aug+study" and acc["dataset"] == "isic2018"
    assert acc["split"] == "test" and acc["study_split"] == "official"


def test_derm_foundation_matches_whatever_its_weights_folder_is_called(report: Path):
    rows = pd.read_csv(report / "comparison_with_paper.csv")
    derm = rows[rows["study_model"] == "derm_foundation/random_forest"]
    assert set(derm["config_label"]) == {"derm_foundation+rf+study+study_input+w-my_derm_copy"}
    assert derm["paper_value"].tolist() == [_paper("embeddings", "default", "derm_foundation/random_forest", "ddi", m)
                                            for m in derm["paper_metric"]]


def test_search_rows_compare_validation_metrics(report: Path):
    rows = pd.read_csv(report / "comparison_with_paper.csv")
    hpo = rows[rows["setting"] == "hpo_ml_validation"].set_index("paper_metric")
    assert set(hpo["split"]) == {"validation"}
    assert hpo.loc["roc_auc", "our_metric"] == "auroc" and hpo.loc["macro_recall", "our_metric"] == "balanced_accuracy"
    ours = _ours(report, "paper", "probe", "dinov2_giant+rf+study_hpo+study_input", "ddi", "validation", "auroc")
    assert hpo.loc["roc_auc", "our_value"] == pytest.approx(ours[0][0])
    # the mean of PPV and NPV is not one of our metrics: the record's study_metrics has it, without a CI
    assert hpo.loc["macro_precision", "our_metric"] == "study_macro_precision"
    assert hpo.loc["macro_precision", "our_value"] == 0.8 and pd.isna(hpo.loc["macro_precision", "paper_in_ci"])


def test_vlm_macro_f1_is_compared_with_the_study_rule(report: Path):
    rows = pd.read_csv(report / "comparison_with_paper.csv")
    vlm = rows[rows["project"] == "vlm"].set_index("paper_metric")
    assert vlm.loc["macro_f1", "our_metric"] == "study_macro_f1" and vlm.loc["macro_f1", "our_value"] == 0.41
    assert vlm.loc["macro_f1", "ci_low"] == 0.30 and vlm.loc["macro_f1", "ci_high"] == 0.50
    paper = _paper("vlm", "vlm_prompt_simple", "google/medgemma-1.5-4b-it", "ISIC18", "macro_f1")
    assert vlm.loc["macro_f1", "paper_value"] == paper and bool(vlm.loc["macro_f1", "paper_in_ci"]) == (0.30 <= paper <= 0.50)
    # a study metric recorded without bounds is compared without a CI, never called inside or outside one
    assert vlm.loc["accuracy", "our_metric"] == "study_accuracy" and math.isnan(vlm.loc["accuracy", "ci_low"])
    assert pd.isna(vlm.loc["accuracy", "paper_in_ci"])
    # the study's precision per class is not comparable for VLMs; its macro recall is, by the study's rule
    assert "precision_malignant" not in vlm.index and vlm.loc["macro_recall", "our_metric"] == "study_macro_recall"
    # a published metric our record does not have is listed without a value, never dropped
    assert pd.isna(vlm.loc["macro_recall", "our_value"]) and vlm.loc["macro_recall", "n_seeds"] == 0
    assert vlm.loc["sensitivity", "our_metric"] == "sensitivity" and vlm.loc["sensitivity", "n_seeds"] == 1


def test_what_differs_from_the_study_is_flagged(report: Path):
    rows = pd.read_csv(report / "comparison_with_paper.csv", keep_default_na=False)
    own = rows[rows["experiment"] == "own"]
    assert len(own) == 10 and set(own["label_definition"]) == {"complete"} and set(own["split_grouping"]) == {"grouped"}
    flags = own["differs_from_study"].iloc[0]
    assert "labels complete ≠ study" in flags and "split grouped ≠ official" in flags
    assert "threshold youden ≠ 0.5" in flags and own["threshold"].iloc[0].startswith("youden (")
    # the synthetic test split is not the study's 1,080 images: flagged, with both counts
    paper_cnn = rows[(rows["experiment"] == "paper") & (rows["setting"] == "balanced_aug")]
    assert "test n " in paper_cnn["differs_from_study"].iloc[0] and "≠ 1080 (909/171)" in paper_cnn["differs_from_study"].iloc[0]
    assert "labels" not in paper_cnn["differs_from_study"].iloc[0] and "threshold" not in paper_cnn["differs_from_study"].iloc[0]
    # ISIC 2018's split is the official one in the study: an ungrouped split of ours differs from it
    assert "split ungrouped ≠ official" in paper_cnn["differs_from_study"].iloc[0]
    # the search rows are on validation: no test counts to compare, and ddi's study split is image-level too
    assert set(rows[rows["setting"] == "hpo_ml_validation"]["differs_from_study"]) == {""}
    page = (report / "comparison.html").read_text()
    assert "labels complete ≠ study" in page and "made alike" in page


def test_unmatched_cells_are_listed_on_both_sides(report: Path):
    unmatched = pd.read_csv(report / "comparison_with_paper_unmatched.csv", keep_default_na=False)
    ours = unmatched[unmatched["side"] == "ours, no published row"]
    assert ours[["experiment", "paradigm", "config_label", "dataset"]].values.tolist() == [
        ["paper", "finetune", "resnet18+balanced_aug", "ddi"]]
    published = unmatched[unmatched["side"] == "published, no run of ours"]
    assert len(published) == len(study_cells()) - 4  # four published cells have a run of ours
    row = published[(published["study_model"] == "vit_l_16") & (published["setting"] == "unbalanced")
                    & (published["study_dataset"] == "HAM10000")]
    assert row[["paradigm", "config_label", "dataset"]].values.tolist() == [
        ["finetune", "torchvision:vit_l_16+unbalanced+study", "ham10000"]]
    page = (report / "comparison.html").read_text()
    assert "Published cells with no run of ours" in page and "resnet18+balanced_aug" in page


def test_no_page_when_no_cell_matches(tmp_path):
    make_synthetic_dataset(tmp_path / "data" / "synth", n=60, size=32, seed=0, progress=False)
    ds = load_dataset(tmp_path / "data" / "synth", quiet=True, check_images=False)
    _write_cell(tmp_path / "runs", ds, "x", "finetune", "resnet18", "balanced_aug", 1, STUDY, "fixed:0.5", {}, 1.0)
    build_report(tmp_path / "runs", tmp_path / "report", ReportOptions(quiet=True, error_pages=False))
    assert not (tmp_path / "report" / "comparison.html").exists()
    assert not (tmp_path / "report" / "comparison_with_paper.csv").exists()
    assert "comparison.html" not in (tmp_path / "report" / "index.html").read_text()
