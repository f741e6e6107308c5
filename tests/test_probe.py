"""Probe paradigm: heads, training-set options, the embedding cache, cells and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dermbench.paradigms.probe.embed_cache import embed_split, embedding_key  # noqa: E402
from dermbench.paradigms.probe.head_models import MLPHead, select_head  # noqa: E402
from dermbench.paradigms.probe.heads import HEADS  # noqa: E402
from dermbench.paradigms.probe.settings import ProbeSettings  # noqa: E402
from dermbench.paradigms.probe.trainset import (  # noqa: E402
    build_training_set,
    label_subset,
    smote,
    transform_features,
    undersample,
)

#: Small trees / few epochs so every head trains in about a second here.
FAST = {"rf_trees": 40, "xgb_trees": 40, "hgb_iterations": 40, "mlp_max_epochs": 40, "mlp_patience": 5, "n_jobs": 1}


def synthetic_embeddings(n: int, dim: int = 16, seed: int = 0, shift: float = 1.5):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    X[:, 0] += shift * y
    X[:, 1] -= shift * y
    return X, y


# ------------------------------------------------------------------------------ heads
@pytest.mark.parametrize("head", sorted(e.name for e in HEADS))
def test_every_head_learns_synthetic_embeddings(head):
    from sklearn.metrics import roc_auc_score

    X, y = synthetic_embeddings(240, seed=1)
    Xv, yv = synthetic_embeddings(80, seed=2)
    Xt, yt = synthetic_embeddings(120, seed=3)
    selection = select_head(head, X, y, Xv, yv, seed=0, options=FAST)
    p = selection.model.predict_proba(Xt)
    assert p.shape == (len(yt),) and np.all((p >= 0) & (p <= 1))
    assert roc_auc_score(yt, p) > 0.75, head
    record = selection.record()
    assert record["chosen"] in [t["params"] for t in record["grid"]]
    assert len(record["grid"]) == len(HEADS.get(head).grid_points())
    # the chosen grid point is the best on validation
    assert record["validation_score"] == pytest.approx(max(t["auroc"] for t in record["grid"]), abs=1e-6)


def test_selection_uses_the_declared_grid_override_and_rejects_unknown_keys():
    X, y = synthetic_embeddings(120)
    Xv, yv = synthetic_embeddings(60, seed=5)
    sel = select_head("logreg", X, y, Xv, yv, grid={"C": [0.5]})
    assert sel.params == {"C": 0.5} and len(sel.trials) == 1
    with pytest.raises(ValueError, match="no hyperparameter"):
        select_head("logreg", X, y, Xv, yv, grid={"gamma": [1]})
    with pytest.raises(ValueError, match="only class"):
        select_head("logreg", X, np.zeros_like(y), Xv, yv)


def test_mlp_restores_its_best_epoch():
    """Few noisy training points and a high learning rate: validation loss turns up early; the
    returned model must be the best epoch's, not the last one's."""
    X, y = synthetic_embeddings(40, dim=64, seed=7, shift=0.8)
    Xv, yv = synthetic_embeddings(200, dim=64, seed=8, shift=0.8)
    head = MLPHead({"lr": 3e-3}, class_weight="balanced", seed=0,
                   options={"mlp_max_epochs": 60, "mlp_patience": 8, "mlp_batch_size": 16})
    head.fit(X, y, Xv, yv)
    info = head.info
    assert info["best_epoch"] < info["epochs_run"], info  # it overfitted and stopped early
    history = info["val_loss_history"]
    assert history[info["best_epoch"] - 1] == pytest.approx(min(history))
    assert history[-1] > min(history)
    # the weights in use reproduce the best validation loss, not the last epoch's
    pos_weight = torch.tensor([(y == 0).sum() / (y == 1).sum()], dtype=torch.float32)
    p = torch.as_tensor(head.predict_proba(Xv)).clamp(1e-7, 1 - 1e-7)
    logits = torch.log(p / (1 - p)).float()
    loss = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)(logits, torch.as_tensor(yv, dtype=torch.float32))
    assert float(loss) == pytest.approx(info["best_val_loss"], rel=1e-3)


def test_xgboost_missing_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_xgboost(name, *args, **kwargs):
        if name == "xgboost":
            raise ImportError("No module named 'xgboost'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xgboost)
    X, y = synthetic_embeddings(60)
    with pytest.raises(ImportError, match="xgboost"):
        select_head("xgboost", X, y, X, y, options=FAST)


# ------------------------------------------------------------------------ training set
def test_label_fraction_is_stratified_seeded_and_nested():
    y = np.array([0] * 80 + [1] * 20)
    small = label_subset(y, fraction=0.1, seed=3)
    large = label_subset(y, fraction=0.25, seed=3)
    assert list(np.bincount(y[small])) == [8, 2]
    assert list(np.bincount(y[large])) == [20, 5]
    assert set(small) <= set(large)
    assert np.array_equal(small, label_subset(y, fraction=0.1, seed=3))
    assert not np.array_equal(small, label_subset(y, fraction=0.1, seed=4))
    assert list(np.bincount(y[label_subset(y, fraction=0.01)])) == [1, 1]  # at least one per class
    assert list(np.bincount(y[label_subset(y, k_shot=5)])) == [5, 5]


def test_undersampling_modes():
    y = np.array([0] * 50 + [1] * 10)
    assert list(np.bincount(y[undersample(y, mode="min_class")])) == [10, 10]
    assert list(np.bincount(y[undersample(y, mode="max_per_class", max_per_class=7)])) == [7, 7]
    assert list(np.bincount(y[undersample(y, mode="ratio", ratio=2.0)])) == [20, 10]
    with pytest.raises(ValueError):
        undersample(y, mode="ratio", ratio=0.5)


def test_smote_balances_in_embedding_space():
    X, y = synthetic_embeddings(100)
    Xr, yr = smote(X, y, k=5, seed=0)
    assert np.bincount(yr)[0] == np.bincount(yr)[1] and len(Xr) > len(X)
    assert np.allclose(Xr[: len(X)], X)


def test_training_set_record_and_views():
    X, y = synthetic_embeddings(50)
    views = [X, X + 0.01, X + 0.02]
    settings = ProbeSettings(label_fraction=0.5, balance="undersample", train_views=2)
    Xt, yt, record = build_training_set(views, y, settings, seed=0)
    assert record["views_per_image"] == 3
    used = record["images_used"]
    assert record["rows_before_balancing"] == {k: 3 * v for k, v in used.items()}
    assert record["rows_trained_on"]["benign"] == record["rows_trained_on"]["malignant"]
    assert len(Xt) == len(yt) == sum(record["rows_trained_on"].values())
    assert np.allclose(transform_features(np.array([[-4.0, 9.0]]), "power"), [[-2.0, 3.0]])


def test_settings_validation_and_variant():
    from dermbench.runs.cell import cell_identity

    ident = cell_identity("probe", "handcrafted", {"head": "rf", "k_shot": 5, "balance": "smote", "train_views": 2})
    assert (ident.variant, ident.curve, ident.label) == ("rf+smote+aug2", {"axis": "k_shot", "value": 5},
                                                          "handcrafted+rf+smote+aug2+5shot")
    assert cell_identity("probe", "handcrafted", {"head": "rf", "balance": "undersample", "undersample": "ratio",
                                                  "ratio": 2, "feature_transform": "power"}).variant == "rf+under2+power"
    with pytest.raises(ValueError, match="Did you mean: logreg"):
        ProbeSettings(head="logreq")
    with pytest.raises(ValueError):
        ProbeSettings(k_shot=5, label_fraction=0.5)
    with pytest.raises(ValueError):
        ProbeSettings(balance="undersample", undersample="max_per_class")
    with pytest.raises(ValueError):
        ProbeSettings(unknown_option=1)


# ---------------------------------------------------------------------- embedding cache
@pytest.fixture(scope="module")
def synth_dataset(tmp_path_factory):
    from dermbench.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "synth", n=60, size=64, seed=0, progress=False)


def counting_embedder(image_size: int = 32, name: str = "counting"):
    """An array backbone (mean colour + spread) that counts the images it embeds."""
    from dermbench.models.embedders.base import Embedder

    calls = {"images": 0}

    def forward(batch):
        calls["images"] += len(batch)
        x = batch.float().numpy() / 255.0
        return np.concatenate([x.mean(axis=(2, 3)), x.std(axis=(2, 3))], axis=1)

    emb = Embedder(name=name, weights_identity="none", embed_dim=6, image_size=image_size, input_kind="uint8",
                   forward=forward)
    return emb, calls


def test_embedding_cache_hit_and_invalidation(synth_dataset, tmp_path):
    import shutil

    from dermbench.data.contract import load_dataset

    dataset = load_dataset(synth_dataset, quiet=True)
    emb, calls = counting_embedder()
    first = embed_split(emb, dataset, "train", progress=False)
    n = len(first.img_ids)
    assert calls["images"] == n and not first.hit and first.vectors.shape == (n, 6)
    again = embed_split(emb, dataset, "train", progress=False)
    assert calls["images"] == n and again.hit  # nothing embedded the second time
    assert np.array_equal(again.vectors, first.vectors) and again.img_ids == first.img_ids

    # a different preprocessing (working size / resize mode) is a different entry
    emb48, calls48 = counting_embedder(image_size=48)
    assert embedding_key(emb48, dataset, "train") != first.key
    assert not embed_split(emb48, dataset, "train", progress=False).hit
    emb.resize_mode = "pad"
    assert embedding_key(emb, dataset, "train") != first.key
    emb.resize_mode = "crop"
    # an augmented view is its own entry, reproducible
    view1 = embed_split(emb, dataset, "train", view=1, progress=False)
    assert view1.key != first.key and not np.allclose(view1.vectors, first.vectors)
    # a changed dataset (one image rewritten) changes the fingerprint and the key
    copy = tmp_path / "synth_changed"
    shutil.copytree(synth_dataset, copy)
    victim = sorted((copy / "images").iterdir())[0]
    from PIL import Image

    Image.new("RGB", (64, 64), (10, 200, 30)).save(victim, format="JPEG")
    changed = load_dataset(copy, quiet=True)
    assert changed.fingerprint != dataset.fingerprint
    assert embedding_key(emb, changed, "train") != first.key


def test_embedding_cache_resumes_after_a_kill(synth_dataset):
    from dermbench.data.contract import load_dataset

    dataset = load_dataset(synth_dataset, quiet=True)
    emb, calls = counting_embedder(name="resumable")
    full = embed_split(emb, dataset, "train", progress=False, shard_size=8)
    n = len(full.img_ids)
    # simulate a kill after three shards: no meta.json, later shards missing, a stray temp file
    (full.path / "meta.json").unlink()
    shards = sorted(full.path.glob("shard-*.npy"))
    for shard in shards[3:]:
        shard.unlink()
    (full.path / ".shard-00004.npy.123.tmp").write_bytes(b"partial")
    calls["images"] = 0
    resumed = embed_split(emb, dataset, "train", progress=False, shard_size=8)
    assert calls["images"] == n - 3 * 8  # only the missing shards were embedded
    assert np.array_equal(resumed.vectors, full.vectors)


# ------------------------------------------------------------------------------- cells
def _spec(dataset, backbone, settings, seed=0, experiment="t"):
    from dermbench.runs.cell import CellSpec

    s = ProbeSettings(**settings)
    return CellSpec(experiment, "probe", model=backbone, dataset=str(dataset), seed=seed,
                    settings=s.model_dump(mode="json"), n_boot=50, quiet=True, device="cpu")


@pytest.mark.parametrize("head", sorted(e.name for e in HEADS))
def test_every_head_runs_a_cell_on_the_synthetic_dataset(synth_dataset, tmp_path, head):
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.record import read_metrics, read_predictions

    spec = _spec(synth_dataset, "handcrafted", {"head": head, "head_options": FAST, "image_size": 64})
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done", (result.path / "error.txt").read_text() if result.status == "failed" else ""
    metrics = read_metrics(result.path)
    assert metrics["extra"]["head"]["chosen"]
    assert metrics["provenance"]["weights"].startswith("none")
    test = read_predictions(result.path, "test")
    assert len(test) == metrics["splits"]["test"]["n"] and test["p_malignant"].between(0, 1).all()


def test_cell_with_timm_backbone_fraction_views_and_cache_reuse(synth_dataset, tmp_path):
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.record import read_metrics

    settings = {"head": "logreg", "weights": "random", "image_size": 32, "label_fraction": 0.5,
                "train_views": 1, "balance": "undersample"}
    first = execute_cell(_spec(synth_dataset, "timm:resnet10t", settings), tmp_path / "runs")
    assert first.status == "done", (first.path / "error.txt").read_text() if first.status == "failed" else ""
    m1 = read_metrics(first.path)
    assert all(not v["cache_hit"] for v in m1["extra"]["embeddings"]["train"])
    assert m1["extra"]["training_set"]["views_per_image"] == 2
    assert m1["extra"]["training_set"]["label_fraction"] == 0.5
    assert m1["provenance"]["weights"] == "random init"
    # another head, same seed: every embedding comes from the cache
    second = execute_cell(_spec(synth_dataset, "timm:resnet10t", {**settings, "head": "knn"}), tmp_path / "runs")
    m2 = read_metrics(second.path)
    assert all(v["cache_hit"] for split in m2["extra"]["embeddings"].values() for v in split)
    assert second.path != first.path
    # another seed: another random network, so its own embeddings (never seed 0's vectors)
    third = execute_cell(_spec(synth_dataset, "timm:resnet10t", settings, seed=1), tmp_path / "runs")
    m3 = read_metrics(third.path)
    assert m3["extra"]["backbone"]["random_init_seed"] == 1 and m1["extra"]["backbone"]["random_init_seed"] == 0
    assert not any(v["cache_hit"] for split in m3["extra"]["embeddings"].values() for v in split)


def test_probe_cli_writes_a_record_and_prints_auroc(synth_dataset, tmp_path, capsys):
    from dermbench.cli.main import main

    code = main(["probe", "--backbone", "handcrafted", "--head", "logreg", "--dataset", str(synth_dataset),
                 "--seeds", "1", "2", "--image-size", "64", "--n-boot", "50", "--runs", str(tmp_path / "runs"),
                 "--experiment", "cli"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("test AUROC") == 2 and "95% CI" in out
    cells = sorted((tmp_path / "runs" / "cli" / "probe").glob("*/*/seed*/COMPLETE"))
    assert len(cells) == 2 and "handcrafted+logreg" in str(cells[0])
    metrics = json.loads((cells[0].parent / "metrics.json").read_text())
    assert metrics["cell"]["settings"]["head"] == "logreg"


def test_probe_cli_label_fraction_curve(synth_dataset, tmp_path, capsys):
    from dermbench.cli.main import main

    code = main(["probe", "--backbone", "handcrafted", "--dataset", str(synth_dataset), "--image-size", "64",
                 "--label-fraction", "0.25", "1", "--n-boot", "20", "--runs", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "handcrafted+logreg+frac0.25 seed 42" in out and "handcrafted+logreg seed 42" in out
    assert main(["probe", "--backbone", "handcrafted", "--dataset", str(synth_dataset), "--k-shot", "3",
                 "--label-fraction", "0.5"]) == 2


def test_embed_cli_then_cached(synth_dataset, capsys):
    from dermbench.cli.main import main

    args = ["embed", "--backbone", "handcrafted", "--dataset", str(synth_dataset), "--image-size", "64"]
    assert main(args) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("cached") >= 3  # second call: every split from the cache


def test_probe_cli_unknown_names_are_clear(synth_dataset, capsys):
    from dermbench.cli.main import main

    assert main(["probe", "--backbone", "handcraftd", "--dataset", str(synth_dataset)]) == 2
    assert "handcrafted" in capsys.readouterr().err
    assert main(["probe", "--backbone", "handcrafted", "--head", "lgreg", "--dataset", str(synth_dataset)]) == 2
    assert "logreg" in capsys.readouterr().err
    # embed: an out-of-range option is one readable line, not a pydantic traceback
    assert main(["embed", "--backbone", "handcrafted", "--dataset", str(synth_dataset), "--train-views", "100"]) == 2
    assert "invalid probe settings: train_views" in capsys.readouterr().err


def test_augmented_views_are_reproducible(synth_dataset):
    import shutil

    from dermbench.data.contract import load_dataset

    dataset = load_dataset(synth_dataset, quiet=True)
    emb, _ = counting_embedder(name="views")
    first = embed_split(emb, dataset, "validation", view=2, progress=False)
    shutil.rmtree(first.path)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    again = embed_split(emb, dataset, "validation", view=2, progress=False)
    assert not again.hit and np.array_equal(first.vectors, again.vectors)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone


def test_augmented_views_do_not_depend_on_batching_sharding_or_workers(synth_dataset):
    """A cached view is shared by every run, whatever its --batch-size / --workers: the vectors
    must be the same however the extraction that filled the cache was batched."""
    import shutil

    from dermbench.data.contract import load_dataset

    dataset = load_dataset(synth_dataset, quiet=True)
    emb, _ = counting_embedder(name="views-layout")
    ways = [dict(batch_size=64), dict(batch_size=5, shard_size=8), dict(batch_size=4, workers=2)]
    vectors = []
    for way in ways:
        got = embed_split(emb, dataset, "validation", view=1, progress=False, **way)
        assert not got.hit
        vectors.append(got.vectors)
        shutil.rmtree(got.path)
    assert all(np.array_equal(vectors[0], v) for v in vectors[1:])


def test_head_registry_metadata_matches_the_declared_grids():
    for entry in HEADS:
        spec = HEADS.get(entry.name)
        assert spec.name == entry.name
        declared = entry.meta["grid"]  # e.g. "C in 0.001, 0.01, 0.1, 1, 10"
        (param, values), = spec.grid.items()
        assert declared.startswith(f"{param} in"), (entry.name, declared)
        listed = sorted(float(v) for v in declared.split(" in ", 1)[1].split(","))
        assert listed == sorted(float(v) for v in values), (entry.name, declared, values)


def test_random_forest_predictions_are_bit_identical_across_runs():
    import numpy as np

    from dermbench.paradigms.probe.head_models import _rf

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 16)), rng.integers(0, 2, 300)
    X_test = rng.normal(size=(500, 16))
    runs = []
    for _ in range(3):
        head = _rf({"min_samples_leaf": 1}, class_weight="balanced", seed=1, y_train=y, options={"n_jobs": 2})
        runs.append(head.fit(X, y).predict_proba(X_test))
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


def test_image_unreadable_at_embedding_time_is_excluded_and_reported(tmp_path, monkeypatch):
    """An image that breaks after the dataset's decode check (the check is bypassed here) is
    excluded from the cell and listed in exclusions.csv, as in finetune — never scored."""
    import shutil

    import pandas as pd

    from dermbench.data import images
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.record import read_metrics, read_predictions
    from dermbench.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "synth", n=60, size=48, seed=3, progress=False)
    victim = pd.read_csv(root / "test_metadata.csv")["img_id"].iloc[0]
    path = root / "images" / victim
    path.write_bytes(path.read_bytes()[:150])  # truncated
    monkeypatch.setattr(images, "check_image", lambda path: None)  # the load-time decode check misses it
    spec = _spec(root, "handcrafted", {"head": "logreg", "image_size": 48})
    result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done", (result.path / "error.txt").read_text() if result.status == "failed" else ""
    assert victim not in set(read_predictions(result.path, "test")["img_id"])
    exclusions = pd.read_csv(result.path / "exclusions.csv")
    assert list(exclusions["img_id"]) == [victim] and exclusions["reason"].iloc[0] == "truncated_image"
    assert read_metrics(result.path)["exclusions"]["count"] == 1
    shutil.rmtree(root)
