"""The finetune ``study`` preset: the study's augmentation (order and values), squash with bilinear
filtering, and an oversampled epoch of max class count x 2 draws; ``paper`` keeps its meaning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermbench.paradigms.finetune.settings import PRESETS, FinetuneSettings
from dermbench.paradigms.finetune import train as ft


def test_study_preset_values_and_paper_unchanged():
    s = FinetuneSettings.from_preset("study")
    assert (s.image_size, s.resize, s.interpolation, s.augment) == (224, "squash", "bilinear", "study")
    assert (s.lr, s.weight_decay, s.t_max, s.eta_min, s.epochs, s.patience, s.batch_size) == \
        (1e-5, 1e-4, 100, 1e-6, 100, 10, 128)
    assert (s.balance, s.balanced_epoch, s.amp, s.label_smoothing, s.min_delta) == \
        ("balanced_aug", "max_class", False, 0.0, 0.0)
    paper = FinetuneSettings.from_preset("paper")
    assert (paper.resize, paper.interpolation, paper.augment, paper.balanced_epoch) == \
        ("crop", "bicubic", "paper", "train_size")
    assert PRESETS["paper"] == dict(image_size=224, resize="crop", augment="paper", lr=1e-5, weight_decay=1e-4,
                                    t_max=100, eta_min=1e-6, epochs=100, patience=10, batch_size=128,
                                    balance="balanced_aug")


def test_study_augmentation_is_the_studys_order_and_values():
    from torchvision import transforms

    from dermbench.paradigms.finetune.augment import study_policy

    steps = study_policy(224)
    assert [type(t).__name__ for t in steps] == [
        "RandomResizedCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotation", "RandomPerspective",
        "ColorJitter", "RandomAffine", "GaussianBlur"]
    crop, hflip, vflip, rot, persp, jitter, affine, blur = steps
    assert crop.size == (224, 224) and crop.scale == (0.8, 1.0) and crop.ratio == (0.75, 1.33)
    assert crop.interpolation == transforms.InterpolationMode.BILINEAR
    assert hflip.p == 0.5 and vflip.p == 0.5
    assert rot.degrees == [-15.0, 15.0]
    assert persp.distortion_scale == 0.5 and persp.p == 0.5
    assert jitter.brightness == (0.8, 1.2) and jitter.contrast is None and jitter.saturation is None
    assert affine.degrees == [-10.0, 10.0] and affine.translate == (0.05, 0.05)
    assert affine.scale == (0.95, 1.05) and affine.shear == [-5.0, 5.0]
    assert blur.kernel_size == (3, 3) and blur.sigma == (0.1, 1.0)  # applied to every image (no p)


def test_study_train_pixels_stay_uint8_at_the_working_size():
    from dermbench.paradigms.finetune.augment import train_pixels

    torch.manual_seed(0)
    out = train_pixels("study", 48)(torch.randint(0, 255, (3, 48, 48), dtype=torch.uint8))
    assert out.dtype == torch.uint8 and out.shape == (3, 48, 48)


def test_balanced_epoch_is_max_class_times_classes():
    labels = np.array([0] * 30 + [1] * 10)
    assert ft.oversampled_epoch(labels, "train_size") == 40
    assert ft.oversampled_epoch(labels, "max_class") == 60
    study = ft.make_sampler(FinetuneSettings.from_preset("study"), labels, seed=1)
    paper = ft.make_sampler(FinetuneSettings.from_preset("paper"), labels, seed=1)
    assert len(study) == 60 and len(list(study)) == 60 and len(paper) == 40
    draws = np.array(list(ft.make_oversampler(labels, 3, 6000)))
    assert abs((labels[draws] == 1).mean() - 0.5) < 0.03  # both classes equally often


def test_squash_bilinear_is_torchvisions_resize():
    from PIL import Image
    from torchvision import transforms

    from dermbench.data.pipeline.decode import ResizePolicy, apply_policy

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, size=(300, 450, 3), dtype=np.uint8))
    ours = apply_policy(img, ResizePolicy(224, "squash", interpolation="bilinear"))
    np.testing.assert_array_equal(ours, np.asarray(transforms.Resize((224, 224))(img)))
    assert ResizePolicy(224, "squash", interpolation="bilinear").key() == "squash224-bilinear"
    assert ResizePolicy(224, "squash").key() == "squash224"  # the default's cache keys are unchanged


def test_study_preset_is_its_own_cell_variant():
    from dermbench.paradigms.finetune.block import FinetuneBlock
    from dermbench.runs.cell import cell_identity

    study = FinetuneBlock.validate_settings({"preset": "study"})
    paper = FinetuneBlock.validate_settings({"preset": "paper"})
    assert cell_identity("finetune", "torchvision:resnet18", study).label == "torchvision:resnet18+balanced_aug+study"
    assert cell_identity("finetune", "torchvision:resnet18", paper).label == "torchvision:resnet18+balanced_aug"


def test_study_preset_cell_records_the_studys_metrics(tmp_path):
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.metrics.study import study_classification_metrics
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics, read_predictions

    root = make_synthetic_dataset(tmp_path / "synth", n=48, size=32, seed=0, progress=False)
    settings = FinetuneSettings.from_preset("study", weights="random", epochs=1, image_size=32, batch_size=16,
                                            workers=0, keep_last_checkpoint=True).model_dump(mode="json")
    spec = CellSpec("t", "finetune", model="timm:resnet10t", dataset=str(root), seed=0, n_boot=10, quiet=True,
                    device="cpu", settings=settings)
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done", (result.path / "error.txt").read_text() if result.status == "failed" else ""
    assert result.path.parent.parent.name == "timm_resnet10t+balanced_aug+study+random"
    metrics = read_metrics(result.path)
    extra = metrics["extra"]
    assert extra["training"]["augment"] == "study" and extra["training"]["resize"] == "squash32-bilinear"
    test = read_predictions(result.path, "test")
    assert set(test["study_pred"]) <= {"benign", "malignant"}
    assert ((test["p_malignant"] > 0.5) == (test["study_pred"] == "malignant")).all()
    expected = study_classification_metrics(["malignant" if v else "benign" for v in test["label"]],
                                            list(test["study_pred"]))
    assert extra["study_metrics"]["test"]["study_macro_f1"] == expected["study_macro_f1"]
    # the epoch drew max class count x 2 images (a last batch of one is dropped for batch norm)
    from dermbench.data.contract import load_dataset

    train = load_dataset(root, quiet=True).split("train")["label"].to_numpy()
    draws = int(np.bincount(train, minlength=2).max() * 2)
    history = torch.load(result.path / "work" / "last.pt", weights_only=True)["history"]
    assert history[0]["train_images"] == draws - (1 if draws % 16 == 1 else 0)
    assert draws != len(train)
