"""The study's VLM protocol: its prompt files loaded verbatim, its metadata blocks, its parser and
its macro-F1 with "error" as a third class, and Ollama /api/generate as the study called it.

The prompt files written here hold placeholder text in the study's structure (dermbench never
ships the study's wording)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from dermbench.errors import PromptSetError
import numpy as np

from dermbench.metrics.study import study_classification_metrics, study_metric_intervals
from dermbench.paradigms.zeroshot.prompts import load_prompt_set
from dermbench.paradigms.zeroshot.study import choose_block, render_block, study_parse, study_rows

SYSTEM = "PLACEHOLDER SYSTEM TEXT.\nAnswer with one label.\n"

# PAD-UFES-20 row PAT_46_881_939 as the study's code printed it: the six sections, each line
# indented by 16 spaces, a leading newline and a trailing newline + 16 spaces (STUDY.md §6.3).
PAD_46 = (
    "\n"
    "                Patient Medical Record\n"
    "\n"
    "                \u2500\u2500 Demographics \u2500\u2500\n"
    "                \u2022 Age: 55\n"
    "                \u2022 Sex: FEMALE\n"
    "                \u2022 Lesion Location: NECK\n"
    "\n"
    "                \u2500\u2500 Lifestyle & Exposure \u2500\u2500\n"
    "                \u2022 Smoke: False\n"
    "                \u2022 Drink: False\n"
    "                \u2022 Pesticide Exposure: False\n"
    "\n"
    "                \u2500\u2500 Symptoms Reported \u2500\u2500\n"
    "                \u2022 Itching: True\n"
    "                \u2022 Growth: True\n"
    "                \u2022 Pain: False\n"
    "                \u2022 Changes in shape/color: True\n"
    "                \u2022 Bleeding: True\n"
    "                \u2022 Elevation: True\n"
    "\n"
    "                \u2500\u2500 Living Conditions \u2500\u2500\n"
    "                \u2022 Piped Water: True\n"
    "                \u2022 Sewage System: True\n"
    "\n"
    "                \u2500\u2500 Medical History \u2500\u2500\n"
    "                \u2022 Skin Cancer History: True\n"
    "                \u2022 Other Cancer History: True\n"
    "\n"
    "                \u2500\u2500 Family Background \u2500\u2500\n"
    "                \u2022 Father's origin: POMERANIA\n"
    "                \u2022 Mother's origin: POMERANIA\n"
    "                "
)


def _study_file(folder: Path, name: str, system: str = SYSTEM, user: str | None = "") -> Path:
    """A prompt file in the study's layout: ``system_prompt: |`` and ``user_prompt: |`` block scalars."""
    lines = ["system_prompt: |"] + [f"  {line}" if line else "" for line in system.rstrip("\n").split("\n")]
    lines.append("")
    if user is None:
        pass
    elif user == "":
        lines.append("user_prompt: |")
    else:
        lines += ["user_prompt: |"] + [f"  {line}" for line in user.rstrip("\n").split("\n")]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def pad_csv(fixtures_raw):
    path = fixtures_raw / "pad_ufes_20" / "metadata_head114.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _contract_frame(csv: Path) -> pd.DataFrame:
    """The published rows as a dermbench split frame holds them: strings, missing = None, the PAD
    source's renames (gender -> sex, region -> site)."""
    df = pd.read_csv(csv, dtype=str, keep_default_na=False).replace({"": None})
    return df.rename(columns={"gender": "sex", "region": "site", "fitspatrick": "fitzpatrick",
                              "diagnostic": "diagnosis"})


def test_study_prompt_file_renders_the_six_section_pad_block(tmp_path, pad_csv):
    """Done-when of issue 11: a study-format prompt file + a real PAD-UFES-20 row -> exactly the
    study's six-section metadata block as the user prompt, nothing appended."""
    prompt_set = load_prompt_set(str(_study_file(tmp_path, "vlm_prompt_patient_info")))
    assert prompt_set.study_format and prompt_set.kind == "generative"
    assert prompt_set.system == SYSTEM  # verbatim: not stripped
    assert prompt_set.uses_metadata
    frame = _contract_frame(pad_csv)
    rows = study_rows(frame)
    row = next(r for r, img in zip(rows, frame["img_id"]) if img == "PAT_46_881_939.png")
    for answer_format in ("json", "study"):
        assert prompt_set.render(row, answer_format=answer_format, metadata_block="pad") == PAD_46
    # the published column names (what the study's CSV had) give the same text
    published = pd.read_csv(pad_csv).to_dict("records")
    row46 = next(r for r in published if r["img_id"] == "PAT_46_881_939.png")
    assert render_block("pad", row46) == PAD_46
    # a non-biopsied row: empty clinical fields print as the study printed them
    row_1516 = next(r for r, img in zip(rows, frame["img_id"]) if img == "PAT_1516_1765_530.png")
    text = render_block("pad", row_1516)
    assert "\u2022 Age: 8\n" in text and "\u2022 Smoke: nan\n" in text and "\u2022 Lesion Location: ARM\n" in text


def test_isic_blocks_and_block_choice():
    row = {"age_approx": 55.0, "sex": "male", "anatom_site_general": "posterior torso",
           "clin_size_long_diam_mm": 3.2}
    isic = render_block("isic", row)
    assert isic == ("\n                Patient and image metadata:\n\n"
                    "                - Approximate age: 55.0\n"
                    "                - Sex: male\n"
                    "                - Lesion location: posterior torso\n                ")
    assert render_block("isic2024", row) == isic + "\n- Lesion diameter: 3.2"
    # dermbench's renamed columns are read too; a column the dataset lacks prints None, as in the study
    assert "- Approximate age: 40\n" in render_block("isic", {"age": 40, "site": "head/neck"})
    assert "- Sex: None\n" in render_block("isic", {"age": 40})
    assert choose_block({"source": "pad-ufes-20"}) == "pad"
    assert choose_block({"source": "isic2024"}) == "isic2024"
    assert choose_block({"source": "isic-archive"}) == "isic"
    for source in ("ham10000", "ddi", "sd-198", "merge", "synthetic", None):
        assert choose_block({"source": source}) == "none"
    assert choose_block({"source": "ham10000"}, "isic") == "isic"


def test_study_rows_type_cells_as_pandas_read_the_csv():
    frame = pd.DataFrame({"age": ["55", None, "40"], "smoke": ["False", "True", None], "sex": ["f", "m", None]})
    rows = study_rows(frame)
    assert [f"{r['age']}" for r in rows] == ["55.0", "nan", "40.0"]  # a gap makes the column float
    assert [f"{r['smoke']}" for r in rows] == ["False", "True", "nan"]
    assert f"{rows[2]['sex']}" == "nan"
    assert [f"{r['age']}" for r in study_rows(pd.DataFrame({"age": ["55", "40"]}))] == ["55", "40"]


def test_study_prompt_files_load_verbatim_and_append_nothing(tmp_path):
    simple = load_prompt_set(str(_study_file(tmp_path, "vlm_prompt_simple", user="Classify it.\nOne word.")))
    assert simple.prompt == "Classify it.\nOne word.\n" and not simple.uses_metadata
    assert simple.render({}, answer_format="json") == "Classify it.\nOne word.\n"
    assert simple.effective_answer_format("json") == "study"
    with pytest.raises(PromptSetError, match="answer_format study"):
        simple.effective_answer_format("word")
    # an empty user prompt on a dataset without a block stays empty (system prompt + image only)
    info = load_prompt_set(str(_study_file(tmp_path, "vlm_prompt_patient_info")))
    assert info.render({"age": 3}, metadata_block="none") == ""
    # the dual-encoder file: the bare words
    dual = tmp_path / "vlm_dual_encoder.yaml"
    dual.write_text("labels: [benign, malignant]\n")
    loaded = load_prompt_set(str(dual))
    assert loaded.kind == "dual" and loaded.class_prompts() == {0: ["benign"], 1: ["malignant"]}
    assert loaded.content_hash != load_prompt_set("bare_words").content_hash  # a distinct, recorded prompt set
    bad = tmp_path / "bad.yaml"
    bad.write_text("system_prompt: x\nuser_prompt: y\ntemperature: 0\n")
    with pytest.raises(PromptSetError, match="unknown key"):
        load_prompt_set(str(bad))
    # dermbench's own sets keep their wording and their content hash; image_only is dermbench's
    assert load_prompt_set("image_only").source == "dermbench"
    assert load_prompt_set("simple").render({}, answer_format="word").endswith("one word: benign or malignant.")


def test_study_parser_and_macro_f1_with_error_class():
    assert study_parse("Malignant.") == "malignant"
    assert study_parse("'benign'") == "benign"
    assert study_parse("not malignant") == "malignant"  # the study's naive substring rule
    assert study_parse("benign or malignant?") == "error"
    assert study_parse("I cannot tell") == "error" and study_parse("") == "error"
    m = study_classification_metrics(["benign", "malignant", "malignant", "benign"],
                                     ["benign", "malignant", "error", "benign"])
    assert m["labels"] == ["benign", "error", "malignant"] and m["n_error"] == 1
    # F1 benign 1.0, malignant 2/3, error 0 -> macro over three classes
    assert m["study_macro_f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3, abs=1e-6)
    assert m["study_accuracy"] == 0.75
    # bootstrap bounds drawn as dermbench's own (whole groups when given), around the point value
    rng = np.random.default_rng(0)
    true = list(rng.choice(["benign", "malignant"], 80))
    pred = [t if rng.random() < 0.7 else rng.choice(["benign", "malignant", "error"]) for t in true]
    point = study_classification_metrics(true, pred)
    ci = study_metric_intervals(true, pred, n_boot=300, seed=1)
    for metric in ("study_macro_f1", "study_accuracy"):
        assert ci[f"{metric}_ci_low"] <= point[metric] <= ci[f"{metric}_ci_high"]
        assert ci[f"{metric}_ci_high"] - ci[f"{metric}_ci_low"] > 0.02
    grouped = study_metric_intervals(true, pred, groups=[i // 8 for i in range(80)], n_boot=300, seed=1)
    assert grouped["ci"]["unit"] == "group" and grouped != ci
    assert study_metric_intervals(true, pred, n_boot=0)["study_macro_f1_ci_low"] is None


@pytest.fixture()
def pad_dataset(tmp_path, fixtures_raw, pad_csv):
    """A contract folder of the fixture's PAD-UFES-20 rows that have an image, card source pad-ufes-20."""
    from dermbench.data.contract import write_card

    root = tmp_path / "pad"
    (root / "images").mkdir(parents=True)
    frame = _contract_frame(pad_csv)
    have = {p.name for p in (fixtures_raw / "pad_ufes_20" / "images").iterdir()}
    frame = frame[frame["img_id"].isin(have)].reset_index(drop=True)
    for name in frame["img_id"]:
        shutil.copy(fixtures_raw / "pad_ufes_20" / "images" / name, root / "images" / name)
    frame["benign_malignant"] = ["malignant" if d in ("BCC", "SCC", "MEL", "ACK") else "benign"
                                 for d in frame["diagnosis"]]
    parts = {"train": frame.iloc[:1], "validation": frame.iloc[1:3], "test": frame.iloc[3:]}
    for split, part in parts.items():
        part.to_csv(root / f"{split}_metadata.csv", index=False)
    write_card(root, source="pad-ufes-20", licence="CC BY 4.0")
    return root


def test_ollama_generate_cell_sends_the_study_request(tmp_path, pad_dataset):
    pytest.importorskip("httpx")
    from dermbench.models.vlm.testing import FakeVLMServer
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics, read_predictions

    prompt_file = _study_file(tmp_path, "vlm_prompt_patient_info")
    with FakeVLMServer() as server:
        spec = CellSpec("t", "zeroshot", model="ollama:good", dataset=str(pad_dataset), seed=42, n_boot=10,
                        quiet=True, settings={"prompt_set": str(prompt_file), "url": server.url,
                                              "ollama_api": "generate", "logprobs": False, "jpeg_quality": 75,
                                              "max_image_side": None, "timeout_s": 5.0, "max_retries": 1})
        result = execute_cell(spec, tmp_path / "runs")
        assert result.status == "done", result.error
        bodies = [r["body"] for r in server.requests]
        assert {r["path"] for r in server.requests} == {"/api/generate"}
    assert "vlm_prompt_patient_info" in str(result.path)
    by_prompt = {b["prompt"] for b in bodies}
    assert f"[SYSTEM PROMPT]\n{SYSTEM}\n\n[USER PROMPT]\n{PAD_46}" in by_prompt
    for body in bodies:
        assert body["options"] == {"temperature": 0.0}  # no seed, no num_predict: the study's request
        assert body["stream"] is False and len(body["images"]) == 1 and "format" not in body
    metrics = read_metrics(result.path)
    extra = metrics["extra"]
    assert extra["answer_format"] == "study" and extra["metadata_block"] == "pad" and extra["study_format"]
    test_study = extra["study_metrics"]["test"]
    assert test_study["n"] == 4 and test_study["n_dropped"] == 0
    preds = read_predictions(result.path, "test")
    assert set(preds["study_pred"]) <= {"benign", "malignant", "error"}
    expected = study_classification_metrics(["malignant" if v else "benign" for v in preds["label"]],
                                             list(preds["study_pred"]))
    assert test_study["study_macro_f1"] == expected["study_macro_f1"]
    assert test_study["ci"]["n_boot"] == 10 and "study_macro_f1_ci_low" in test_study
    # the honest metrics stay where they were
    assert "macro_f1" not in extra and metrics["splits"]["test"]["metrics"]


def test_dataset_without_the_blocks_columns_is_a_clear_error(tmp_path, pad_dataset):
    pytest.importorskip("httpx")
    from dermbench.models.vlm.testing import FakeVLMServer
    from dermbench.paradigms.zeroshot.cell import _check_block_columns
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec

    with pytest.raises(PromptSetError, match="has none of its columns"):
        _check_block_columns("isic", ["img_id", "label", "diagnosis"], "isic2018", "vlm_prompt_patient_info")
    _check_block_columns("isic2024", ["age", "sex", "site"], "d", "p")  # some missing: warned, printed None
    with FakeVLMServer() as server:
        spec = CellSpec("t", "zeroshot", model="ollama:good", dataset=str(pad_dataset), seed=42, n_boot=10,
                        quiet=True, settings={"prompt_set": str(_study_file(tmp_path, "other")), "url": server.url,
                                              "answer_format": "word"})
        result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "failed" and "answer_format study" in result.error
