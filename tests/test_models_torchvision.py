"""The study's torchvision classifiers: catalog entries, DEFAULT weights, the head the study replaced
(built with weights=None here: no network, no weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermbench.errors import WeightsNotFoundError
from dermbench.models import build_classifier, build_embedder, catalog, resolve

STUDY_TORCHVISION = {  # name -> (DEFAULT weights the study got, the head it replaced)
    "resnet18": ("IMAGENET1K_V1", "fc"), "resnet152": ("IMAGENET1K_V2", "fc"),
    "efficientnet_b0": ("IMAGENET1K_V1", "classifier.1"), "efficientnet_b7": ("IMAGENET1K_V1", "classifier.1"),
    "densenet121": ("IMAGENET1K_V1", "classifier"), "densenet161": ("IMAGENET1K_V1", "classifier"),
    "vit_b_32": ("IMAGENET1K_V1", "heads.head"), "vit_l_16": ("IMAGENET1K_V1", "heads.head"),
    "convnext_tiny": ("IMAGENET1K_V1", "classifier.2"), "convnext_base": ("IMAGENET1K_V1", "classifier.2"),
    "convnext_large": ("IMAGENET1K_V1", "classifier.2"),
}
SMALL = ("resnet18", "efficientnet_b0", "densenet121", "convnext_tiny", "vit_b_32")


def test_catalog_has_the_studys_torchvision_models_with_their_default_weights():
    import torchvision

    specs = catalog()
    names = {n for n, s in specs.items() if s.framework == "torchvision"}
    assert names == {f"torchvision:{n}" for n in STUDY_TORCHVISION}
    for name, (tag, _) in STUDY_TORCHVISION.items():
        spec = resolve("classifier", f"torchvision:{name}")
        assert "classifier" in spec.study_kinds and spec.model_id == name
        assert torchvision.models.get_model_weights(name).DEFAULT.name == tag, name
        assert tag in spec.description and tag in spec.source
    # the bare names stay dermbench's timm versions (what they always meant), no longer marked as the study's
    assert resolve("classifier", "resnet152").framework == "timm"
    assert not resolve("classifier", "resnet152").study_kinds
    assert "torchvision:resnet152" in resolve("classifier", "resnet152").note
    # any torchvision model by prefix
    assert resolve("classifier", "torchvision:mobilenet_v3_small").framework == "torchvision"


@pytest.mark.parametrize("name", SMALL)
def test_random_build_replaces_the_studys_head_and_freezes_the_rest(name):
    tag, head = STUDY_TORCHVISION[name]
    built = build_classifier(f"torchvision:{name}", weights="random")
    model = built.model
    assert built.weights_identity == "random init"
    assert model.head_path == head and model.get_classifier() is model.net.get_submodule(head)
    assert model.get_classifier().out_features == 2
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 2)
    frozen = build_classifier(f"torchvision:{name}", weights="random", freeze=True)
    trainable = {n for n, p in frozen.model.named_parameters() if p.requires_grad}
    assert trainable == {f"net.{head}.weight", f"net.{head}.bias"}
    assert tuple(built.data_config["mean"]) == (0.485, 0.456, 0.406)


def test_embedder_is_the_input_of_the_replaced_head():
    emb = build_embedder("torchvision:resnet18", weights="random", image_size=64)
    assert emb.embed_dim == 512
    out = emb(torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8))
    assert out.shape == (2, 512)


def test_default_weights_missing_offline_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match=r"resnet152-f82ba261\.pth") as err:
        build_classifier("torchvision:resnet152")
    assert "IMAGENET1K_V2" in str(err.value) and str(tmp_path / "torch") in str(err.value)


def test_local_checkpoints_torchvision_and_finetuned(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "imagenet.pth"
    torch.save(reference.state_dict(), path)
    built = build_classifier("torchvision:resnet18", weights=str(path))
    assert built.weights_identity.startswith("file:")
    torch.testing.assert_close(built.model.net.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert built.model.get_classifier().out_features == 2
    # a fine-tuned 2-class checkpoint (as the finetune cell saves it) loads with its head
    tuned = tmp_path / "tuned.pth"
    torch.save(built.model.state_dict(), tuned)
    again = build_classifier("torchvision:resnet18", weights=str(tuned))
    torch.testing.assert_close(again.model.get_classifier().weight, built.model.get_classifier().weight)
    wrong = tmp_path / "wrong.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="do not match"):
        build_classifier("torchvision:resnet18", weights=str(wrong))


def test_finetune_cell_trains_a_torchvision_model(tmp_path):
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics

    root = make_synthetic_dataset(tmp_path / "synth", n=40, size=32, seed=0, progress=False)
    spec = CellSpec("t", "finetune", model="torchvision:resnet18", dataset=str(root), seed=0, n_boot=10, quiet=True,
                    device="cpu", settings={"preset": "smoke", "weights": "random", "epochs": 1, "image_size": 32,
                                            "workers": 0})
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done", (result.path / "error.txt").read_text() if result.status == "failed" else ""
    metrics = read_metrics(result.path)
    assert metrics["extra"]["model"]["name"] == "torchvision:resnet18"
    assert np.isfinite(metrics["extra"]["training"]["best_val_loss"])
