"""The local Hugging Face generative backend with tiny VLMs built from configs (no download)."""

from __future__ import annotations

import math

import pytest
import torch
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from dermbench.models.vlm.base import VLMRequest  # noqa: E402
from dermbench.paradigms.zeroshot.parsing import score_answer  # noqa: E402
from dermbench.runner.cell import execute_cell  # noqa: E402
from dermbench.runs.cell import CellSpec  # noqa: E402
from dermbench.runs.record import is_complete, read_metrics, read_predictions  # noqa: E402

# "malignant" is token 0: a model whose final norm is zeroed has all-zero logits and greedy
# decoding (argmax, first index on ties) then always answers "malignant".
WORDS = (["malignant", "benign", "[PAD]", "[UNK]", "</s>", "<image>", "USER:", "ASSISTANT:", "SYSTEM:"]
         + ("a an the is this of or with skin lesion image look at classify it as answer json object only in form "
            "label confidence number from 0 to 1 how sure you are expert dermatologist").split())
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}SYSTEM: {% for c in m['content'] %}{{ c['text'] }} "
    "{% endfor %}{% elif m['role'] == 'user' %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def tiny_llava():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                pad_token_id=2, eos_token_id=4, bos_token_id=4),
        image_token_index=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.language_model.norm.weight.zero_()
    return model, processor


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory):
    model, processor = tiny_llava()
    folder = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    paths = []
    for i, colour in enumerate(((200, 40, 40), (40, 40, 200), (90, 160, 60))):
        path = folder / f"im{i}.png"
        Image.new("RGB", (40, 30 + i), colour).save(path)
        paths.append(str(path))
    return paths


def _backend(model, processor, **kw):
    from dermbench.models.frameworks.hf.generative import HFGenerativeBackend

    opts = dict(model_id="tiny-llava", weights="random init", device=torch.device("cpu"), batch_size=2,
                max_new_tokens=3, logprobs=True, top_logprobs=3)
    opts.update(kw)
    return HFGenerativeBackend(model, processor, **opts)


def test_batched_greedy_generation_with_logprobs(images):
    model, processor = tiny_llava()
    # a fixed output layer: logits malignant 2, benign 1, everything else 0, at every step
    head = torch.nn.Linear(16, len(WORDS), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[0], head.bias[1] = 2.0, 1.0
    model.lm_head = head
    backend = _backend(model, processor)
    requests = [VLMRequest(f"im{i}", p, "classify it", "expert dermatologist") for i, p in enumerate(images)]
    answers = {}
    backend.answer_all(requests, lambda a: answers.__setitem__(a.img_id, a))
    assert set(answers) == {"im0", "im1", "im2"}  # 2 batches (2 + 1), left-padded
    for answer in answers.values():
        assert answer.text == "malignant malignant malignant"
        assert "".join(t.token for t in answer.tokens) == answer.text
        scored = score_answer(answer.text, 0, tokens=answer.tokens)
        assert scored.label == 1 and scored.score_source == "logprobs"
        assert math.isclose(scored.p_malignant, math.exp(2) / (math.exp(2) + math.exp(1)), rel_tol=1e-5)
    assert backend._system_supported is True


def test_an_unreadable_image_is_a_failed_answer_not_a_stopped_run(images, tmp_path):
    # review: one unreadable image raised out of answer_all and stopped the run (and every re-run)
    model, processor = tiny_llava()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    backend = _backend(model, processor, logprobs=False, max_new_tokens=1)
    requests = [VLMRequest("a", images[0], "q"), VLMRequest("bad", str(broken), "q"), VLMRequest("b", images[1], "q")]
    answers = {}
    backend.answer_all(requests, lambda a: answers.__setitem__(a.img_id, a))
    assert set(answers) == {"a", "bad", "b"}
    assert answers["bad"].failed and not answers["a"].failed and not answers["b"].failed


def test_system_message_falls_back_into_the_user_turn(images):
    model, processor = tiny_llava()
    processor.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                               "{{ raise_exception('System role not supported') }}{% endif %}"
                               "USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                               "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}ASSISTANT:")
    backend = _backend(model, processor, logprobs=False)
    text = backend.render(VLMRequest("a", images[0], "classify it", "expert dermatologist"))
    assert text.startswith("USER: <image> expert dermatologist") and backend._system_supported is False
    answers = []
    backend.answer_all([VLMRequest("a", images[0], "classify it", "expert")], answers.append)
    assert answers[0].tokens is None and answers[0].text.startswith("malignant")


def test_hf_cell_end_to_end_from_a_saved_tiny_model(tmp_path, llava_folder):
    from dermbench.data.synth import make_synthetic_dataset

    synth = make_synthetic_dataset(tmp_path / "synth", n=30, size=32, progress=False)
    spec = CellSpec("t", "zeroshot", model=f"hf:{llava_folder}", dataset=str(synth), seed=42,
                    settings={"prompt_set": "simple", "batch_size": 4, "max_new_tokens": 2, "top_logprobs": 3}, n_boot=10,
                    device="cpu", quiet=True)
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done", result.error
    assert is_complete(result.path)
    preds = read_predictions(result.path, "test")
    assert (preds["raw_answer"] == "malignant malignant").all()
    assert (preds["answer_label"] == 1).all()
    assert preds["score_source"].isin(["logprobs", "label"]).all()
    metrics = read_metrics(result.path)
    assert metrics["extra"]["unparsed_rate"] == 0.0 and metrics["extra"]["backend"] == "hf"
    assert metrics["provenance"]["weights"] == str(llava_folder.resolve())
    assert (result.path / "work" / "answers.jsonl").is_file()


def tiny_qwen2_vl_folder(folder):
    """A tiny Qwen2-VL (vision tower, M-RoPE text model, its own processor) saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>", "<|endoftext|>"]
    words = (["malignant", "benign", "[UNK]"] + specials
             + "system user assistant a is this skin lesion classify it expert answer json label".split())
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", unk_token="[UNK]",
                                        eos_token="<|im_end|>")
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<|vision_start|> <|image_pad|> <|vision_end|> {% else %}"
                "{{ c['text'] }} {% endif %}{% endfor %}<|im_end|> {% endfor %}"
                "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                              temporal_patch_size=2),
        tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=template)
    ids = dict(eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|im_start|>"])
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}, tie_word_embeddings=False, **ids),
        vision_config=dict(depth=1, embed_dim=16, hidden_size=16, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"], **ids)
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_gemma3_folder(folder):
    """A tiny Gemma 3 (MedGemma's architecture: SigLIP tower, pooled soft image tokens) saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor,
                              PreTrainedTokenizerFast)

    specials = ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                "<image_soft_token>"]
    words = (["malignant", "benign", "<unk>"] + specials
             + "user model system a is this skin lesion classify it expert answer json label".split())
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<end_of_turn>", bos_token="<bos>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"})
    template = ("{{ bos_token }}{% for m in messages %}<start_of_turn> "
                "{{ 'model' if m['role'] == 'assistant' else 'user' }} {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<start_of_image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
                "<end_of_turn> {% endfor %}{% if add_generation_prompt %}<start_of_turn> model {% endif %}")
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 32, "width": 32}),
                                tokenizer=tokenizer, chat_template=template, image_seq_length=4)
    config = Gemma3Config(
        text_config=dict(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=256,
                         sliding_window=64, pad_token_id=vocab["<pad>"], eos_token_id=vocab["<end_of_turn>"],
                         bos_token_id=vocab["<bos>"]),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        mm_tokens_per_image=4, boi_token_index=vocab["<start_of_image>"], eoi_token_index=vocab["<end_of_image>"],
        image_token_index=vocab["<image_soft_token>"])
    torch.manual_seed(0)
    Gemma3ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("build,architecture", [(tiny_qwen2_vl_folder, "Qwen2VLForConditionalGeneration"),
                                                (tiny_gemma3_folder, "Gemma3ForConditionalGeneration")])
def test_tiny_vlms_through_the_registry_factory(tmp_path, images, build, architecture):
    from dermbench.models import build_zeroshot
    from dermbench.paradigms.zeroshot.settings import ZeroshotSettings

    folder = build(tmp_path / "tiny-vlm")
    backend = build_zeroshot(f"hf:{folder}", ZeroshotSettings(max_new_tokens=4, batch_size=2, top_logprobs=4),
                             device="cpu")
    assert type(backend.model).__name__ == architecture
    requests = [VLMRequest(f"im{i}", p, "classify it", "expert") for i, p in enumerate(images)]
    answers = {}
    backend.answer_all(requests, lambda a: answers.__setitem__(a.img_id, a))
    assert len(answers) == 3
    for answer in answers.values():
        assert not answer.failed and answer.tokens is not None
        assert "".join(t.token for t in answer.tokens) == answer.text
        assert all(len(t.top) == 4 and t.logprob <= 0 for t in answer.tokens)
    # images of different sizes in one batch: the same image gives the same answer alone or batched
    alone = []
    backend.answer_all(requests[:1], alone.append)
    assert alone[0].text == answers["im0"].text


def test_missing_local_vlm_is_a_clear_error(tmp_path):
    from dermbench.errors import WeightsNotFoundError
    from dermbench.models import build_zeroshot
    from dermbench.paradigms.zeroshot.settings import ZeroshotSettings

    with pytest.raises(WeightsNotFoundError, match="--weights PATH"):
        build_zeroshot(f"hf:{tmp_path / 'missing'}", ZeroshotSettings(), device="cpu")
