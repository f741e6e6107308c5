"""Zeroshot cells end to end against a local fake server: run record, rates, resume, CLI."""

from __future__ import annotations

import re

import pandas as pd
import pytest

pytest.importorskip("httpx")

from dermbench.models.vlm.testing import FakeVLMServer  # noqa: E402
from dermbench.runner.cell import execute_cell  # noqa: E402
from dermbench.runs.cell import CellSpec  # noqa: E402
from dermbench.runs.record import is_complete, read_metrics, read_predictions  # noqa: E402


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from dermbench.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", n=30, size=32, progress=False)


@pytest.fixture()
def server():
    with FakeVLMServer() as srv:
        yield srv


def _spec(synth, model, url, prompt="simple", **settings):
    base = {"prompt_set": prompt, "url": url, "timeout_s": 2.0, "max_retries": 1, "backoff_s": 0.01,
            "concurrency": 3}
    base.update(settings)
    return CellSpec("t", "zeroshot", model=model, dataset=str(synth), seed=42,
                    settings=base, n_boot=20, quiet=True)


def test_ollama_cell_writes_a_complete_record(tmp_path, synth, server):
    result = execute_cell(_spec(synth, "ollama:good", server.url), tmp_path)
    assert result.status == "done", result.error
    assert is_complete(result.path)
    preds = read_predictions(result.path, "test")
    assert {"raw_answer", "parse_status", "score_source", "p_malignant", "answer_label"} <= set(preds.columns)
    assert (preds["score_source"] == "logprobs").all()
    assert preds["raw_answer"].str.contains('"label"').all()
    metrics = read_metrics(result.path)
    extra = metrics["extra"]
    assert extra["unparsed_rate"] == 0.0 and extra["failed_rate"] == 0.0
    assert extra["score_source"] == {"logprobs": 1.0}
    assert extra["prompt_set"] == "simple" and extra["kind"] == "generative"
    assert metrics["splits"]["test"]["metrics"]["auroc"]["value"] is not None
    # the request carried the prompt set's system message and JSON schema
    assert all(r["body"]["format"]["required"] == ["label", "confidence"] for r in server.requests)


def test_resume_asks_only_unanswered_images(tmp_path, synth, server):
    spec = _spec(synth, "openai:good", server.url + "/v1")
    first = execute_cell(spec, tmp_path)
    assert first.status == "done", first.error
    n_images = len(server.requests)
    assert n_images == 12  # validation + test of the tiny synth set
    # simulate a kill after 5 answers: keep 5 lines of the cache, remove the completion marker
    cache = first.path / "work" / "answers.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:5]) + "\n" + lines[5][:17])  # and a torn last line
    (first.path / "COMPLETE").unlink()
    again = execute_cell(spec, tmp_path)
    assert again.status == "done", again.error
    assert len(server.requests) == n_images + (n_images - 5)
    assert read_metrics(again.path)["extra"]["answers_cached"] == 5
    # a complete cell is skipped without a request
    assert execute_cell(spec, tmp_path).status == "skipped"
    assert len(server.requests) == n_images + (n_images - 5)


def test_resume_re_asks_an_image_whose_content_changed(tmp_path, synth, server):
    # review: the answer cache was keyed on the img_id, not the image: a replaced image reused the old answer
    import shutil

    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(synth, data)
    spec = _spec(data, "ollama:good", server.url)
    first = execute_cell(spec, tmp_path / "runs")
    assert first.status == "done", first.error
    n_images = len(server.requests)
    test_csv = pd.read_csv(data / "test_metadata.csv")
    image = next((data / "images").glob(f"{test_csv['img_id'].iloc[0]}*"))
    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    (first.path / "COMPLETE").unlink()
    again = execute_cell(spec, tmp_path / "runs")
    assert again.status == "done", again.error
    assert len(server.requests) == n_images + 1
    assert read_metrics(again.path)["extra"]["answers_cached"] == n_images - 1


def test_unparsed_answers_are_scored_wrong_and_counted(tmp_path, synth, server):
    result = execute_cell(_spec(synth, "ollama:garbage", server.url), tmp_path)
    assert result.status == "done", result.error
    extra = read_metrics(result.path)["extra"]
    assert extra["unparsed_rate"] == 1.0 and extra["failed_rate"] == 0.0
    for split in ("validation", "test"):
        preds = read_predictions(result.path, split)
        assert (preds["p_malignant"] == 1 - preds["label"]).all()
        assert (preds["pred"] != preds["label"]).all()
        assert (preds["parse_status"] == "no_label").all()
    acc = read_metrics(result.path)["splits"]["test"]["metrics"]["accuracy"]["value"]
    assert acc == 0.0


def test_failed_requests_fail_the_cell_above_max_failed_rate(tmp_path, synth, server):
    result = execute_cell(_spec(synth, "ollama:error500", server.url), tmp_path)
    assert result.status == "failed"
    assert "HTTP 500" in result.error and "max_failed_rate" in result.error
    assert not is_complete(result.path)


def test_failed_requests_below_the_limit_are_counted(tmp_path, synth, server):
    result = execute_cell(_spec(synth, "ollama:error500", server.url, max_failed_rate=1.0), tmp_path)
    assert result.status == "done", result.error
    extra = read_metrics(result.path)["extra"]
    assert extra["failed_rate"] == 1.0
    preds = read_predictions(result.path, "test")
    assert (preds["parse_status"] == "failed").all() and preds["error"].str.contains("HTTP 500").all()
    assert (preds["p_malignant"] == 1 - preds["label"]).all()
    # the failures are recorded as the package's one exclusion record (scored wrong, not dropped)
    from dermbench.data.exclusions import read_exclusions

    failed = read_exclusions(pd.read_csv(result.path / "work" / "failed_requests.csv", keep_default_na=False,
                                         na_values=[""]))
    assert {(e.reason, e.split) for e in failed if e.img_id in set(preds["img_id"])} == {("request_failed", "test")}
    assert all("HTTP 500" in e.detail for e in failed)


def test_metadata_prompt_renders_rows_and_refuses_missing_columns(tmp_path, synth, server):
    result = execute_cell(_spec(synth, "ollama:good", server.url, prompt="patient_metadata"), tmp_path)
    assert result.status == "done", result.error
    prompts = [r["body"]["messages"][-1]["content"] for r in server.requests]
    assert all("Age:" in p and "Sex:" in p for p in prompts)
    assert not any("nan" in p.lower().split() for p in prompts)
    bad = execute_cell(_spec(synth, "ollama:good", server.url, prompt="patient_metadata",
                             metadata_columns={"smoke": "Smoker"}), tmp_path / "b")
    assert bad.status == "failed" and "has none of its columns" in bad.error


def test_word_answers_with_the_study_prompt(tmp_path, synth, server):
    result = execute_cell(_spec(synth, "ollama:good", server.url, prompt="image_only", answer_format="word",
                                logprobs=False), tmp_path)
    assert result.status == "done", result.error
    preds = read_predictions(result.path, "test")
    assert set(preds["raw_answer"]) <= {"malignant", "benign"}
    assert (preds["score_source"] == "label").all()
    assert "format" not in server.requests[0]["body"]


def test_cli_zeroshot(tmp_path, synth, server, capsys):
    from dermbench.cli.zeroshot import add_parser
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["zeroshot", "--model", "ollama:good", "--dataset", str(synth), "--prompt", "abcde",
                              "--url", server.url, "--concurrency", "2", "--runs", str(tmp_path), "--n-boot", "10",
                              "--set", "max_retries=0"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "test AUROC" in out and "unparsed 0.0%" in out
    cell = tmp_path / "zeroshot" / "zeroshot" / "ollama_good+abcde" / "synth" / "seed42"
    assert is_complete(cell)
    schema = server.requests[0]["body"]["format"]
    assert schema["required"][0] == "reasoning"


def test_cli_rejects_wrong_prompt_kind(synth):
    from dermbench.errors import UnknownNameError, UsageError
    from dermbench.cli.zeroshot import add_parser, build_specs
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["zeroshot", "--model", "clip_vit_b32", "--dataset", str(synth), "--prompt", "simple"])
    with pytest.raises(UsageError, match="dual model"):
        build_specs(args)
    args = parser.parse_args(["zeroshot", "--model", "clip_vit_b23", "--dataset", str(synth)])
    with pytest.raises(UnknownNameError, match="Did you mean: clip_vit_b32"):
        build_specs(args)


def test_catalog_names_and_prefixes():
    from dermbench.errors import UnknownNameError
    from dermbench.models import model_names, prefixes, resolve

    for name in ("clip_vit_b32", "clip_vit_l14", "medsiglip_448", "siglip", "biomedclip", "dermlip", "monet",
                 "qwen2_vl_2b", "qwen2_5_vl_3b", "medgemma_4b", "medgemma_1_5_4b", "phi3_5_vision"):
        assert name in model_names("zeroshot")
    spec = resolve("zeroshot", "ollama:llama3.2-vision:11b")
    assert spec.model_id == "llama3.2-vision:11b" and spec.backend == "ollama" and spec.study
    assert resolve("zeroshot", "ollama:llava:13b").model_id == "llava:13b"
    assert resolve("zeroshot", "open_clip:hf-hub:org/repo").model_id == "hf-hub:org/repo"
    for bad in ("ollama:", "nonsense:x"):
        with pytest.raises(UnknownNameError):
            resolve("zeroshot", bad)
    assert resolve("zeroshot", "biomedclip").zeroshot_kind == "dual"
    assert resolve("zeroshot", "hf:Qwen/Qwen2-VL-7B-Instruct").zeroshot_kind == "generative"
    assert resolve("zeroshot", "siglip:google/siglip2-base-patch16-224").backend == "hf-siglip"
    assert "openai" in [p.prefix for p in prefixes("zeroshot")]


def test_prompt_sets_registered_and_valid():
    from dermbench.paradigms.zeroshot.prompts import PROMPT_SETS, load_prompt_set

    assert {"bare_words", "derm_ensemble", "image_only", "simple", "patient_metadata", "abcde"} <= set(PROMPT_SETS.names())
    bare = load_prompt_set("bare_words").class_prompts()
    assert bare == {0: ["benign"], 1: ["malignant"]}
    ens = load_prompt_set("derm_ensemble").class_prompts()
    assert len(ens[0]) > 4 and all("malignant" not in p for p in ens[0])


def test_metadata_numbers_and_letters_are_not_read_as_yes_no():
    # review: integer 1 (Fitzpatrick type I, a 1 mm diameter) was rendered "yes", and sex "F" "no"
    from dermbench.paradigms.zeroshot.prompts import MetadataField, render_metadata

    fields = (MetadataField("fitzpatrick", "Fitzpatrick skin type"), MetadataField("diameter_1", "Diameter", "mm"),
              MetadataField("sex", "Sex"), MetadataField("grew", "Has grown"), MetadataField("age", "Age", "years"))
    rows = pd.DataFrame({"fitzpatrick": [1, 2], "diameter_1": [1, 0], "sex": ["F", "M"], "grew": [True, False],
                         "age": [float("nan"), 40.0]}).to_dict("records")
    assert render_metadata(rows[0], fields).splitlines() == [
        "- Fitzpatrick skin type: 1", "- Diameter: 1 mm", "- Sex: F", "- Has grown: yes"]
    assert render_metadata(rows[1], fields).splitlines() == [
        "- Fitzpatrick skin type: 2", "- Diameter: 0 mm", "- Sex: M", "- Has grown: no", "- Age: 40 years"]


def test_metadata_columns_mapping_with_a_missing_column_is_an_error():
    # review: a mapped column the dataset lacks (a typo) was silently left out of every prompt
    from dermbench.paradigms.zeroshot.prompts import PromptSetError, load_prompt_set, metadata_fields_from_mapping

    ps = load_prompt_set("patient_metadata")
    fields = metadata_fields_from_mapping({"age": "Age [years]", "age_aprox": "Age"})
    with pytest.raises(PromptSetError, match="age_aprox"):
        ps.check_dataset_columns(["img_id", "age", "sex"], "d", fields)
    assert ps.check_dataset_columns(["img_id", "age"], "d", metadata_fields_from_mapping({"age": "Age"})) == ["age"]
    assert ps.check_dataset_columns(["img_id", "age", "sex"], "d") == ["age", "sex"]  # shipped mapping: partial ok


def test_metadata_rendering_without_nans():
    from dermbench.paradigms.zeroshot.prompts import load_prompt_set

    ps = load_prompt_set("patient_metadata")
    row = {"age": 55.0, "sex": "FEMALE", "site": "NECK", "itch": "True", "bleed": "False",
           "diameter_1": float("nan"), "smoke": "", "fitzpatrick": None}
    text = ps.render(row)
    assert "- Age: 55 years" in text and "- Sex: female" in text and "- Itches: yes" in text
    assert "- Bleeds: no" in text
    assert not re.search(r"\bnan\b", text.lower()) and "None" not in text and "diameter" not in text.lower()
    assert "- not available for this patient" in ps.render({"age": float("nan")})
    frame = pd.DataFrame({"img_id": ["a"], "diagnosis": ["nev"]})
    with pytest.raises(ValueError, match="has none of its columns"):
        ps.check_dataset_columns(list(frame.columns), "mini")


def test_an_edited_prompt_set_makes_its_complete_cell_changed(tmp_path):
    """The prompt set's content hash travels in the cell settings, so the runner redoes a cell
    whose prompts were edited instead of keeping answers to the old prompts."""
    import shutil
    from pathlib import Path

    import dermbench.paradigms.zeroshot as zs
    from dermbench.cli.main import build_parser
    from dermbench.cli.zeroshot import build_specs
    from dermbench.runner.cell import changed_fields
    from dermbench.runs.record import RunRecorder

    yaml_path = tmp_path / "mine.yaml"
    shutil.copy(Path(zs.__file__).parent / "prompt_sets" / "derm_ensemble.yaml", yaml_path)
    (tmp_path / "ds").mkdir()
    argv = ["zeroshot", "--model", "clip_vit_b32", "--dataset", str(tmp_path / "ds"), "--prompt", str(yaml_path)]
    first = build_specs(build_parser().parse_args(argv))[0]
    recorder = RunRecorder(tmp_path / "cell")
    recorder.begin(first.to_dict())
    assert changed_fields(build_specs(build_parser().parse_args(argv))[0], recorder.path) == []
    yaml_path.write_text(yaml_path.read_text().replace("a photo of {} skin.", "a photo of {} skin tissue."))
    again = build_specs(build_parser().parse_args(argv))[0]
    assert again.settings["prompt_set_hash"] != first.settings["prompt_set_hash"]
    assert changed_fields(again, recorder.path) == ["settings.prompt_set_hash"]
