"""Dual encoders: tiny random-init HF CLIP, SigLIP and open_clip models score images end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
transformers = pytest.importorskip("transformers")

from dermbench.models.vlm.dual import p_malignant_from_embeddings  # noqa: E402
from dermbench.paradigms.zeroshot.settings import ZeroshotSettings  # noqa: E402
from dermbench.runner.cell import execute_cell  # noqa: E402
from dermbench.runs.cell import CellSpec  # noqa: E402
from dermbench.runs.record import is_complete, read_metrics, read_predictions  # noqa: E402

WORDS = ("[PAD] [UNK] [EOS] a an of the is this photo image close-up clinical dermoscopic dermatology showing "
         "photograph skin lesion on benign malignant non-cancerous cancerous melanocytic nevus keratosis "
         "melanoma cancer . -").split()
TEXT = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=24, eos_token_id=2, pad_token_id=0, bos_token_id=2)
VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
              patch_size=8)


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from dermbench.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synth", n=30, size=32, progress=False)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=8)).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-siglip")
    model = SiglipModel(SiglipConfig(text_config=TEXT, vision_config=VISION))
    with torch.no_grad():  # SigLIP's trained bias is strongly negative; make the test see that regime
        model.logit_scale.fill_(np.log(10.0))
        model.logit_bias.fill_(-10.0)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def open_clip_tiny(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("oc")
    cfg = {"embed_dim": 8,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "patch_size": 8, "head_width": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    (folder / "dermbench-tiny-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / "dermbench-tiny-test.json")
    return "dermbench-tiny-test"


def _run(tmp_path, synth, model, prompt, **settings):
    spec = CellSpec("t", "zeroshot", model=model, dataset=str(synth), seed=42,
                    settings={"prompt_set": prompt, "batch_size": 4, **settings}, n_boot=20, device="cpu", quiet=True)
    result = execute_cell(spec, tmp_path)
    assert result.status == "done", result.error
    assert is_complete(result.path)
    return result.path


def test_hf_clip_cell(tmp_path, synth, clip_folder):
    cell = _run(tmp_path, synth, f"clip:{clip_folder}", "derm_ensemble")
    preds = read_predictions(cell, "test")
    assert preds["p_malignant"].between(0, 1).all() and preds["p_malignant"].nunique() > 1
    assert np.allclose(preds["score_benign"] + preds["score_malignant"], 1.0)  # softmax over the two classes
    metrics = read_metrics(cell)
    assert metrics["extra"]["scoring"] == "softmax"
    assert metrics["extra"]["n_prompts"] == {"benign": 24, "malignant": 24}
    assert metrics["provenance"]["weights"] == str(clip_folder.resolve())


def test_hf_siglip_cell_uses_sigmoid(tmp_path, synth, siglip_folder):
    cell = _run(tmp_path, synth, f"siglip:{siglip_folder}", "bare_words")
    preds = read_predictions(cell, "validation")
    metrics = read_metrics(cell)
    assert metrics["extra"]["scoring"] == "sigmoid"
    # independent sigmoid scores: they do not sum to one
    assert not np.allclose(preds["score_benign"] + preds["score_malignant"], 1.0)
    assert np.allclose(preds["p_malignant"], preds["score_malignant"] / (preds["score_benign"] + preds["score_malignant"]))


def test_open_clip_cell_random_init(tmp_path, synth, open_clip_tiny):
    cell = _run(tmp_path, synth, f"open_clip:{open_clip_tiny}", "bare_words", weights="random")
    preds = read_predictions(cell, "test")
    assert preds["p_malignant"].between(0, 1).all()
    assert read_metrics(cell)["provenance"]["weights"] == "random init"


def test_text_embeddings_are_cached(clip_folder):
    from dermbench.models import build_zeroshot
    from dermbench.models.vlm.dual import text_embeddings
    from dermbench.utils.paths import cache_dir

    encoder = build_zeroshot(f"clip:{clip_folder}", ZeroshotSettings(), device="cpu")
    first = text_embeddings(encoder, ["benign", "malignant"])
    files = list(cache_dir("zeroshot-text").glob("*.npy"))
    assert files
    encoder.encode_texts = None  # a second call must not embed again
    assert np.array_equal(text_embeddings(encoder, ["benign", "malignant"]), first)


def test_text_embedding_cache_is_keyed_by_dtype(clip_folder):
    # review: the key lacked dtype/device, so float16 GPU vectors were reused by a float32 CPU run
    from dermbench.models import build_zeroshot
    from dermbench.models.vlm.dual import text_embeddings

    encoder = build_zeroshot(f"clip:{clip_folder}", ZeroshotSettings(), device="cpu")
    prompts = ["a dtype-keyed benign prompt", "a dtype-keyed malignant prompt"]
    first = text_embeddings(encoder, prompts)
    calls = []
    encode = encoder.encode_texts
    encoder.encode_texts = lambda texts: calls.append(1) or encode(texts)
    encoder.dtype = "float16"
    text_embeddings(encoder, prompts)
    assert calls == [1]
    encoder.dtype = "float32"
    assert np.array_equal(text_embeddings(encoder, prompts), first) and calls == [1]


def test_missing_weights_is_a_clear_error(tmp_path):
    from dermbench.errors import WeightsNotFoundError
    from dermbench.models import build_zeroshot

    with pytest.raises(WeightsNotFoundError, match="download"):
        build_zeroshot(f"clip:{tmp_path / 'no-such-model'}", ZeroshotSettings(), device="cpu")


def test_softmax_and_sigmoid_scoring_math():
    images = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    benign = np.array([[1.0, 0.0], [0.8, 0.6]])
    malignant = np.array([[0.0, 1.0]])
    p, probs = p_malignant_from_embeddings(images, benign, malignant, scoring="softmax", logit_scale=10.0)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert p[0] < 0.5 < p[1]
    # ensembling averages the normalised class embeddings, not the probabilities
    mean = benign.mean(axis=0) / np.linalg.norm(benign.mean(axis=0))
    logit_b, logit_m = 10 * images[2] @ mean, 10 * images[2] @ malignant[0]
    assert np.isclose(p[2], np.exp(logit_m) / (np.exp(logit_m) + np.exp(logit_b)))
    p_sig, scores = p_malignant_from_embeddings(images, benign, malignant, scoring="sigmoid",
                                                logit_scale=10.0, logit_bias=-5.0)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    expected_b = np.mean([sig(10 * images[2] @ t - 5) for t in benign])
    assert np.isclose(scores[2, 0], expected_b)
    assert np.isclose(p_sig[2], scores[2, 1] / scores[2].sum())
    assert not np.isclose(p_sig[2], p[2])
    with pytest.raises(ValueError):
        p_malignant_from_embeddings(images, benign, malignant, scoring="cosine", logit_scale=1.0)


def test_image_embeddings_are_cached_across_prompt_sets(tmp_path, synth, clip_folder):
    first = _run(tmp_path / "a", synth, f"clip:{clip_folder}", "bare_words")
    second = _run(tmp_path / "b", synth, f"clip:{clip_folder}", "derm_ensemble")
    assert read_metrics(first)["extra"]["image_embeddings_cached"] in ({"validation": False, "test": False},
                                                                       {"validation": True, "test": True})
    assert read_metrics(second)["extra"]["image_embeddings_cached"] == {"validation": True, "test": True}
