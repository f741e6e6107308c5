"""The study's probe protocol: its fixed head defaults (head_preset study), its Optuna search
(study_hpo), and its DINOv2/DINOv3 input (preprocessing study: 256 -> 224 centre crop, CLS token)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermbench.paradigms.probe.settings import ProbeSettings
from dermbench.paradigms.probe.study_heads import (
    DynamicMLPHead,
    StudyHead,
    StudyMLPHead,
    fit_study_head,
    smote_lite,
    study_estimator,
)


def embeddings(n: int, dim: int = 12, seed: int = 0, shift: float = 1.5):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    X[:, 0] += shift * y
    X[:, 1] -= shift * y
    return X, y


def test_study_defaults_are_the_studys_models_config():
    rf, params = study_estimator("rf", seed=42)
    assert (rf.n_estimators, rf.criterion, rf.max_depth, rf.min_samples_split, rf.min_samples_leaf,
            rf.max_features, rf.class_weight, rf.random_state) == (100, "gini", None, 2, 1, "sqrt",
                                                                   "balanced_subsample", 42)
    pytest.importorskip("xgboost")
    xgb, _ = study_estimator("xgboost", seed=42)
    p = xgb.get_params()
    assert (p["n_estimators"], p["max_depth"], p["learning_rate"], p["subsample"], p["colsample_bytree"],
            p["scale_pos_weight"], p["objective"], p["eval_metric"]) == (300, 6, 0.1, 0.8, 0.8, 1.0,
                                                                           "binary:logistic", "auc")
    svm, params = study_estimator("svm", seed=42)
    inner = getattr(svm, "estimator", svm)
    assert (inner.kernel, inner.C, inner.gamma, inner.class_weight) == ("rbf", 1.0, "scale", "balanced")
    # no feature scaling: the head is the bare estimator, not a pipeline with a scaler
    head = StudyHead(svm, params)
    assert head.model is svm and not hasattr(head.model, "steps")


def test_study_heads_fit_on_train_only_and_keep_their_own_decision():
    X, y = embeddings(200, seed=1)
    Xv, yv = embeddings(60, seed=2)
    for name in ("rf", "svm"):
        model, record = fit_study_head(name, "study", X, y, Xv, yv, seed=42)
        assert record["search"] is None and record["preset"] == "study"
        p = model.predict_proba(Xv)
        assert p.shape == (len(yv),) and np.all((p >= 0) & (p <= 1))
        assert set(np.unique(model.study_predict(Xv))) <= {0, 1}
        # fitted on train only: refitting on the same train data gives the same model whatever validation is
        again, _ = fit_study_head(name, "study", X, y, Xv[:5], yv[:5], seed=42)
        np.testing.assert_allclose(again.predict_proba(Xv), p)
    with pytest.raises(ValueError, match="study's heads only"):
        fit_study_head("logreg", "study", X, y, Xv, yv)


def test_study_mlp_is_the_studys_network_and_does_not_restore_its_best_epoch():
    X, y = embeddings(300, dim=20, seed=3)
    Xv, yv = embeddings(80, dim=20, seed=4, shift=0.2)  # weak signal on validation: its loss soon rises
    head = StudyMLPHead(seed=0, lr=1e-2).fit(X, y, Xv, yv)
    kinds = [type(m).__name__ for m in head.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert [head.net[0].out_features, head.net[4].out_features, head.net[8].out_features] == [512, 256, 2]
    assert head.net[3].p == 0.3
    history = head.info["val_loss_history"]
    best_epoch = int(np.argmin(history)) + 1
    # stops `patience` epochs after the last strictly lower validation loss ...
    assert head.info["epochs_run"] == best_epoch + 10 and not head.info["hit_max_epochs"]
    # ... and tests the last epoch's weights, not the best epoch's (the study's quirk)
    assert head.info["best_weights_restored"] is False
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    from dermbench.paradigms.probe.study_heads import _mean_batch_loss

    last = _mean_batch_loss(head.net, criterion, torch.as_tensor(Xv), torch.as_tensor(yv.astype(np.int64)), 512)
    assert last == pytest.approx(history[-1], abs=1e-6)
    assert history[-1] > min(history)
    p = head.predict_proba(Xv)
    np.testing.assert_array_equal(head.study_predict(Xv), (p > 0.5).astype(int))


def test_smote_lite_evens_the_classes_between_minority_rows():
    X, y = embeddings(50, dim=3, seed=5)
    X2, y2 = smote_lite(X, y, seed=42)
    counts = np.bincount(y2)
    assert counts[0] == counts[1] and len(y2) > len(y)
    minority = int(np.argmin(np.bincount(y)))
    new = X2[len(y):]
    lo, hi = X[y == minority].min(0), X[y == minority].max(0)
    assert np.all(new >= lo - 1e-6) and np.all(new <= hi + 1e-6)  # interpolations stay inside the minority's box
    np.testing.assert_array_equal(smote_lite(X, y, seed=42)[0], X2)  # seeded


def test_study_hpo_search_records_its_trials():
    pytest.importorskip("optuna")
    X, y = embeddings(120, seed=6)
    Xv, yv = embeddings(40, seed=7)
    model, record = fit_study_head("svm", "study_hpo", X, y, Xv, yv, seed=42, trials=3)
    search = record["search"]
    assert search["trials"] == 3 and len(search["history"]) == 3
    assert search["objective"].startswith("mean 5-fold")
    best = max(t["cv_macro_f1"] for t in search["history"])
    assert search["best_value"] == pytest.approx(best, abs=1e-6)
    chosen = next(t["params"] for t in search["history"] if t["cv_macro_f1"] == best)
    assert all(record["params"][k] == v for k, v in chosen.items())
    svc = getattr(model.model, "estimator", model.model)
    assert (svc.kernel, svc.gamma) == (chosen["kernel"], chosen["gamma"]) and 0.1 <= chosen["C"] <= 10
    assert svc.class_weight == "balanced"  # the study's defaults under the searched values

    mlp, record = fit_study_head("mlp", "study_hpo", X, y, Xv, yv, seed=42, trials=2,
                                 options={"mlp_max_epochs": 10})
    assert isinstance(mlp, DynamicMLPHead) and record["study_head"] == "dynamic_mlp"
    assert mlp.info["best_weights_restored"] is True
    assert mlp.info["smote_lite"]["rows_after"] > mlp.info["smote_lite"]["rows_before"]
    assert len(record["search"]["history"]) == 2


def test_study_hpo_without_optuna_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("No module named 'optuna'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    X, y = embeddings(60)
    with pytest.raises(ImportError, match=r"dermbench\[hpo\]"):
        fit_study_head("svm", "study_hpo", X, y, X, y, trials=1)


def test_settings_and_cell_identity():
    from dermbench.runs.cell import cell_identity

    with pytest.raises(ValueError, match="study's heads only"):
        ProbeSettings(head="logreg", head_preset="study")
    with pytest.raises(ValueError, match="grid override"):
        ProbeSettings(head="rf", head_preset="study", grid={"min_samples_leaf": [1]})
    ident = cell_identity("probe", "handcrafted", {"head": "rf", "head_preset": "study"})
    assert ident.label == "handcrafted+rf+study"
    ident = cell_identity("probe", "dinov3_vith16plus", {"head": "mlp", "head_preset": "study_hpo",
                                                         "preprocessing": "study"})
    assert ident.label == "dinov3_vith16plus+mlp+study_hpo+study_input"
    assert cell_identity("probe", "handcrafted", {"head": "rf"}).label == "handcrafted+rf"


@pytest.fixture(scope="module")
def synth_dataset(tmp_path_factory):
    from dermbench.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "synth", n=60, size=64, seed=0, progress=False)


@pytest.mark.parametrize("head", ["svm", "mlp"])
def test_study_preset_cell_records_the_studys_metrics_and_saves_its_head(synth_dataset, tmp_path, head):
    from dermbench.metrics.study import study_classification_metrics
    from dermbench.paradigms.probe.head_store import load_head
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics, read_predictions

    settings = ProbeSettings(head=head, head_preset="study", image_size=64,
                             head_options={"mlp_max_epochs": 60}).model_dump(mode="json")
    spec = CellSpec("t", "probe", model="handcrafted", dataset=str(synth_dataset), seed=42, settings=settings,
                    n_boot=20, quiet=True, device="cpu")
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done", (result.path / "error.txt").read_text() if result.status == "failed" else ""
    assert result.path.parent.parent.name == f"handcrafted+{head}+study"
    metrics = read_metrics(result.path)
    extra = metrics["extra"]
    assert extra["head_preset"] == "study" and extra["study_head"]["preset"] == "study"
    assert "no best" not in extra["head_imbalance_handling"]
    test = read_predictions(result.path, "test")
    expected = study_classification_metrics(["malignant" if v else "benign" for v in test["label"]],
                                            list(test["study_pred"]))
    assert extra["study_metrics"]["test"]["study_macro_f1"] == expected["study_macro_f1"]
    # the saved head scores like the fitted one
    loaded = load_head(result.path, extra["head_file"])
    from dermbench.paradigms.probe.cell import build_embedder, embed_dataset
    from dermbench.data.contract import load_dataset

    ds = load_dataset(synth_dataset, quiet=True)
    s = ProbeSettings(**settings)
    emb = embed_dataset(build_embedder("handcrafted", s, "cpu"), ds, s, progress=False)["test"][0]
    p = loaded.predict_proba(emb.vectors)
    by_id = dict(zip(emb.img_ids, p))
    np.testing.assert_allclose([by_id[i] for i in test["img_id"]], test["p_malignant"], rtol=1e-6, atol=1e-9)


def test_crop_from_is_torchvisions_resize_then_centre_crop():
    from PIL import Image
    from torchvision import transforms

    from dermbench.data.pipeline.decode import ResizePolicy, apply_policy

    rng = np.random.default_rng(0)
    for size in ((300, 410), (410, 300), (257, 257)):
        img = Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8))
        ours = apply_policy(img, ResizePolicy(224, "crop", crop_from=256))
        ref = transforms.CenterCrop(224)(transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC)(img))
        np.testing.assert_array_equal(ours, np.asarray(ref))
    assert ResizePolicy(224, "crop", crop_from=256).key() == "crop224from256"
    with pytest.raises(ValueError, match="crop_from"):
        ResizePolicy(224, "squash", crop_from=256)


def test_study_input_of_the_dinov3_backbones():
    from dermbench.models import resolve
    from dermbench.paradigms.probe.cell import _study_input

    for name in ("dinov3_vith16plus", "dinov3_vit7b16"):
        assert resolve("backbone", name).options["study_input"] == {"image_size": 224, "crop_from": 256,
                                                                    "global_pool": "token"}
    for name in ("dinov3_convnext_tiny", "dinov2_giant"):
        assert resolve("backbone", name).options["study_input"] == {"image_size": 224, "crop_from": 256}
    assert _study_input("dinov3_vit7b16", ProbeSettings(preprocessing="study"), {}) == \
        {"image_size": 224, "crop_from": 256, "global_pool": "token"}
    assert _study_input("dinov3_vit7b16", ProbeSettings(), {}) is None
    with pytest.raises(ValueError, match="fixes image_size"):
        _study_input("dinov3_vit7b16", ProbeSettings(preprocessing="study", image_size=256), {})


def test_token_pooling_is_the_dinov3_cls_output():
    """The study took a DINOv3 ViT's CLS token after the final norm; timm's global_pool=token is it."""
    from dermbench.models import build_embedder

    emb = build_embedder("timm:vit_small_patch16_dinov3", weights="random", image_size=224, global_pool="token")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        cls = emb.module.forward_features(x)[:, 0]
    np.testing.assert_allclose(emb(x), cls.numpy(), rtol=1e-5, atol=1e-5)
