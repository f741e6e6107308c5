"""Zeroshot precision and loading: ``dtype: auto`` per model family (bf16 where native, fp16 only for
CLIP-style towers, else fp32 — never fp16 for MedGemma or SigLIP), models loaded in their dtype and
never cast afterwards (HF's float32 buffers stay float32), generative VLMs loaded straight onto a
GPU when accelerate is there, and a cell whose answers are mostly empty fails instead of completing."""

from __future__ import annotations

import importlib.util

import numpy as np

import pytest
import torch

from dermbench.models import resolve
from dermbench.utils.device import torch_dtype

pytest.importorskip("transformers")


@pytest.fixture
def gpu(monkeypatch):
    def configure(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return configure


@pytest.mark.parametrize("name,fp16_safe", [("medgemma_4b", False), ("medgemma_1_5_4b", False), ("qwen2_vl_2b", False),
                                            ("phi3_5_vision", False), ("medsiglip_448", False), ("siglip", False),
                                            ("clip_vit_b32", True), ("clip_vit_l14", True), ("monet", True),
                                            ("biomedclip", True)])
def test_dtype_auto_per_model_family(gpu, name, fp16_safe):
    spec = resolve("zeroshot", name)
    assert spec.fp16_safe is fp16_safe
    gpu((7, 5))  # T4: no native bf16
    assert torch_dtype("auto", "cuda", fp16_safe=spec.fp16_safe) == (torch.float16 if fp16_safe else torch.float32)
    gpu((9, 0))  # H100
    assert torch_dtype("auto", "cuda", fp16_safe=spec.fp16_safe) == torch.bfloat16
    assert torch_dtype("auto", "cpu", fp16_safe=spec.fp16_safe) == torch.float32


def test_open_clip_siglip_and_catalog_override_are_not_fp16():
    from dermbench.models.spec import ModelSpec

    assert not ModelSpec("x", ("dual_encoder",), "open_clip", "hf-hub:timm/ViT-B-16-SigLIP").fp16_safe
    assert ModelSpec("x", ("dual_encoder",), "open_clip", "ViT-B-32/openai").fp16_safe
    assert not ModelSpec("x", ("dual_encoder",), "hf", "o/m", options={"architecture": "clip", "fp16": False}).fp16_safe


def test_generative_vlm_is_loaded_in_its_dtype_and_never_cast(tmp_path):
    """Loaded with from_pretrained(dtype=bfloat16): weights in bf16, the rotary inv_freq buffer that
    transformers keeps in float32 stays float32 (a later .to(bfloat16) would have cast it)."""
    from test_vlm_hf import tiny_qwen2_vl_folder

    from dermbench.models import build_zeroshot
    from dermbench.paradigms.zeroshot.settings import ZeroshotSettings

    folder = tiny_qwen2_vl_folder(tmp_path / "qwen")
    backend = build_zeroshot(f"hf:{folder}", ZeroshotSettings(dtype="bfloat16", max_new_tokens=2), device="cpu")
    params = {p.dtype for p in backend.model.parameters()}
    assert torch.bfloat16 in params
    inv_freq = [b for name, b in backend.model.named_buffers() if name.endswith("inv_freq")]
    assert inv_freq and all(b.dtype == torch.float32 for b in inv_freq)
    assert backend.identity()["dtype"] == "bfloat16"


def test_generative_vlm_goes_straight_onto_the_gpu_with_accelerate(monkeypatch):
    from dermbench.models.frameworks.hf import generative

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "accelerate" else real_find_spec(name, *a))
    assert generative._straight_onto(torch.device("cuda:1")) == {"device_map": {"": "cuda:1"}}
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert generative._straight_onto(torch.device("cuda")) == {"device_map": {"": "cuda:0"}}
    assert generative._straight_onto(torch.device("cpu")) == {}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "accelerate" else real_find_spec(name, *a))
    assert generative._straight_onto(torch.device("cuda:1")) == {}  # without accelerate: loaded, then moved


def test_dual_encoder_is_loaded_in_its_dtype(tmp_path):
    from test_zeroshot_dual import TEXT, VISION, tiny_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from dermbench.models import build_zeroshot
    from dermbench.paradigms.zeroshot.settings import ZeroshotSettings

    folder = tmp_path / "clip"
    CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=8)).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    encoder = build_zeroshot(f"clip:{folder}", ZeroshotSettings(dtype="bfloat16"), device="cpu")
    assert encoder.dtype == "bfloat16" and next(encoder.model.parameters()).dtype == torch.bfloat16


def test_a_cell_whose_answers_are_mostly_empty_fails(tmp_path):
    pytest.importorskip("httpx")
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.models.vlm.testing import FakeVLMServer
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import is_complete

    synth = make_synthetic_dataset(tmp_path / "synth", n=30, size=32, progress=False)
    with FakeVLMServer() as server:
        spec = CellSpec("t", "zeroshot", model="ollama:empty", dataset=str(synth), n_boot=10, quiet=True,
                        settings={"prompt_set": "simple", "url": server.url, "timeout_s": 2.0, "max_retries": 0})
        result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "failed" and not is_complete(result.path)
    assert "answers of ollama model" in result.error and "are empty" in result.error
    assert (result.path / "work" / "answers.jsonl").is_file()  # kept: nothing is asked twice on a re-run


def test_dual_encoder_images_are_preprocessed_in_loader_workers(tmp_path):
    """Decoding and the model's preprocessing run in DataLoader workers: the same vectors as the
    in-process path, batch by batch, whatever the number of workers."""
    from test_zeroshot_dual import TEXT, VISION, tiny_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from dermbench.data.images import open_rgb
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.models import build_zeroshot
    from dermbench.paradigms.zeroshot.settings import ZeroshotSettings

    folder = tmp_path / "clip"
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=8)).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    encoder = build_zeroshot(f"clip:{folder}", ZeroshotSettings(batch_size=4), device="cpu")
    synth = make_synthetic_dataset(tmp_path / "synth", n=30, size=40, progress=False)
    paths = sorted(str(p) for p in (synth / "images").rglob("*.png"))[:10] or \
        sorted(str(p) for p in (synth / "images").rglob("*.jpg"))[:10]
    assert len(paths) == 10
    in_process = encoder.encode_images([open_rgb(p) for p in paths])
    for workers in (0, 2):
        np.testing.assert_array_equal(encoder.encode_image_paths(paths, batch_size=4, workers=workers), in_process)
