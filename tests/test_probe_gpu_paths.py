"""The probe's GPU-relevant paths, checked on a CPU: a cell whose embeddings are cached never builds
its backbone, extraction keeps one loader across shards, a shard with non-finite values is never
written, and a large backbone is stored in half precision on a GPU (and runs that way)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermbench.models.embedders import base
from dermbench.paradigms.probe import cell as probe_cell
from dermbench.paradigms.probe import embed_cache
from dermbench.paradigms.probe.settings import ProbeSettings


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from dermbench.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("probe_gpu") / "synth", n=40, size=48, seed=2,
                                  progress=False)


def _spec(dataset, settings, seed=0, backbone="timm:resnet10t"):
    from dermbench.runs.cell import CellSpec

    return CellSpec("g", "probe", model=backbone, dataset=str(dataset), seed=seed, n_boot=20, quiet=True,
                    device="cpu", settings=ProbeSettings(**settings).model_dump(mode="json"))


# --- 13. cached embeddings: the backbone is not built --------------------------------------------------

def test_a_cell_with_cached_embeddings_does_not_build_its_backbone(synth, tmp_path, monkeypatch):
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.record import read_metrics

    settings = {"head": "logreg", "weights": "random", "image_size": 32, "train_views": 1}
    built = []
    real_build = probe_cell.build_embedder

    def counting_build(*args, **kwargs):
        built.append(args[0])
        return real_build(*args, **kwargs)

    monkeypatch.setattr(probe_cell, "build_embedder", counting_build)
    first = execute_cell(_spec(synth, settings), tmp_path / "runs")
    assert first.status == "done", first.error
    assert built == ["timm:resnet10t"]

    # other heads and label fractions of the same backbone: found from the request, never built
    for other in ({"head": "knn"}, {"head": "logreg", "label_fraction": 0.5}):
        result = execute_cell(_spec(synth, {**settings, **other}), tmp_path / "runs")
        assert result.status == "done", result.error
    assert built == ["timm:resnet10t"]
    m1, m2 = read_metrics(first.path), read_metrics(result.path)
    assert m1["extra"]["backbone"]["loaded"] is True and m2["extra"]["backbone"]["loaded"] is False
    assert m2["timing"]["build_backbone_s"] == 0.0
    assert m2["provenance"]["weights"] == m1["provenance"]["weights"] == "random init"
    assert m2["provenance"]["dtype"] == m1["provenance"]["dtype"] == "float32"
    assert {k: v for k, v in m2["extra"]["backbone"].items() if k != "loaded"} == \
        {k: v for k, v in m1["extra"]["backbone"].items() if k != "loaded"}
    keys = lambda m: [v["key"] for views in m["extra"]["embeddings"].values() for v in views]  # noqa: E731
    assert keys(m1) == keys(m2)

    # another seed of a random network is another request: built
    execute_cell(_spec(synth, settings, seed=1), tmp_path / "runs")
    assert built == ["timm:resnet10t", "timm:resnet10t"]
    # a missing shard makes the cached answer incomplete: built again, shard re-embedded
    from dermbench.utils.paths import safe_name

    entry = embed_cache.cache_dir("embeddings") / safe_name("timm:resnet10t") / keys(m1)[0]
    (entry / "shard-00000.npy").unlink()
    again = execute_cell(_spec(synth, {**settings, "head": "svm"}), tmp_path / "runs")
    assert again.status == "done", again.error
    assert built[-1] == "timm:resnet10t" and len(built) == 3


def test_a_changed_weights_file_is_another_request(synth, tmp_path):
    from dermbench.data.contract import load_dataset

    ds = load_dataset(synth, quiet=True)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"v1")
    s = ProbeSettings(head="logreg", weights=str(weights))
    before = probe_cell.embedding_request("timm:resnet10t", s, ds, "cpu", 0)
    assert before == probe_cell.embedding_request("timm:resnet10t", s, ds, "cpu", 0)
    weights.write_bytes(b"version two")
    assert probe_cell.embedding_request("timm:resnet10t", s, ds, "cpu", 0) != before
    # the seed matters for random init only
    default = ProbeSettings(head="logreg")
    assert (probe_cell.embedding_request("timm:resnet10t", default, ds, "cpu", 0)
            == probe_cell.embedding_request("timm:resnet10t", default, ds, "cpu", 1))


# --- 16. one loader across shards -----------------------------------------------------------------------

def _uint8_embedder(name="mean_colour", bad_rows=()):
    calls = {"batches": 0}

    def forward(batch):
        calls["batches"] += 1
        x = batch.float().numpy() / 255.0
        out = np.concatenate([x.mean(axis=(2, 3)), x.std(axis=(2, 3))], axis=1)
        for row in bad_rows:
            if calls["batches"] == 1 and row < len(out):
                out[row, 0] = np.nan
        return out

    return base.Embedder(name=name, weights_identity="none", embed_dim=6, image_size=32, input_kind="uint8",
                         forward=forward), calls


def test_extraction_keeps_one_loader_across_shards(synth, monkeypatch):
    from torch.utils import data

    from dermbench.data.contract import load_dataset

    ds = load_dataset(synth, quiet=True)
    created = []
    real_loader = data.DataLoader

    class CountingLoader(real_loader):
        def __init__(self, *args, **kwargs):
            created.append(kwargs.get("batch_sampler") is not None)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(data, "DataLoader", CountingLoader)
    embedder, _ = _uint8_embedder("sharded")
    sharded = embed_cache.embed_split(embedder, ds, "train", batch_size=4, shard_size=8, progress=False)
    n = len(sharded.img_ids)
    assert n > 16  # at least three shards
    assert created.count(True) == 1  # one extraction loader for every shard (not one per shard)
    assert len(list(sharded.path.glob("shard-*.npy"))) == -(-n // 8)
    whole, _ = _uint8_embedder("whole")
    one_shard = embed_cache.embed_split(whole, ds, "train", batch_size=4, shard_size=4096, progress=False)
    np.testing.assert_array_equal(sharded.vectors, one_shard.vectors)


# --- 9. non-finite vectors are never cached ------------------------------------------------------------

def test_a_shard_with_nan_is_refused_before_it_is_written(synth):
    from dermbench.data.contract import load_dataset

    ds = load_dataset(synth, quiet=True)
    embedder, _ = _uint8_embedder("overflowing", bad_rows=(1,))
    with pytest.raises(FloatingPointError, match="non-finite embeddings for 1 of") as err:
        embed_cache.embed_split(embedder, ds, "validation", batch_size=4, shard_size=8, progress=False)
    key = embed_cache.embedding_key(embedder, ds, "validation")
    folder = embed_cache.entry_dir(embedder, key)
    assert not list(folder.glob("shard-*.npy")) and not (folder / "meta.json").exists()
    assert "float16 overflow" in str(err.value)


# --- 8. large backbones stored in half precision on a GPU ----------------------------------------------

def test_large_backbones_are_stored_in_half_precision_on_gpu(monkeypatch):
    module = torch.nn.Linear(64, 64)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert base.half_storage_dtype(module, "cuda:0") is None          # small: float32 + autocast
    monkeypatch.setattr(base, "LARGE_BACKBONE_BYTES", 1024)
    assert base.half_storage_dtype(module, "cuda:0") is torch.bfloat16
    assert base.half_storage_dtype(module, "cpu") is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert base.half_storage_dtype(module, "cuda:0") is torch.float16  # V100: no native bf16
    assert base.LARGE_BACKBONE_BYTES < 7e9 * 4                         # DINOv3 ViT-7B in float32 is above it


def test_a_dinov3_vit_stored_in_bf16_embeds_like_float32():
    """The half-precision forward path on the DINOv3 ViT architecture (tiny, random init): weights in
    bf16 (its rotary buffer kept in float32), autocast in their dtype, vectors finite and within bf16
    round-off of float32's."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_dinov3", pretrained=False, num_classes=0, depth=2, img_size=32,
                              dynamic_img_size=True).eval()
    x = torch.randn(3, 3, 32, 32)
    reference = base.torch_forward(model)(x)
    base.cast_parameters(model, torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert dict(model.named_buffers())["rope.periods"].dtype == torch.float32  # rotary frequencies stay exact
    half = base.torch_forward(model)(x)
    assert half.dtype == np.float32 and np.isfinite(half).all()
    cosine = (reference * half).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() > 0.99


# --- 12. TensorFlow (Derm Foundation) grows its GPU memory instead of reserving every GPU --------------

def test_derm_foundation_enables_memory_growth_before_tf_touches_a_gpu(tmp_path, monkeypatch):
    import sys
    import types

    from dermbench.models import build_embedder

    events = []

    class GPU:
        def __init__(self, name, initialised=False):
            self.name, self.initialised = name, initialised

    def set_memory_growth(gpu, enable):
        if gpu.initialised:
            raise RuntimeError("Physical devices cannot be modified after being initialized")
        events.append(("growth", gpu.name, enable))

    def load(path):
        events.append(("load", path))
        return types.SimpleNamespace(signatures={"serving_default": lambda **kw: None})

    fake_tf = types.SimpleNamespace(
        __version__="fake", constant=lambda values: values,
        config=types.SimpleNamespace(
            list_physical_devices=lambda kind: [GPU("/physical_device:GPU:0"), GPU("/physical_device:GPU:1")],
            experimental=types.SimpleNamespace(set_memory_growth=set_memory_growth)),
        saved_model=types.SimpleNamespace(load=load))
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf)
    (tmp_path / "saved_model.pb").write_bytes(b"graph")
    build_embedder("derm_foundation", weights=str(tmp_path))
    assert events[:2] == [("growth", "/physical_device:GPU:0", True), ("growth", "/physical_device:GPU:1", True)]
    assert events[2][0] == "load"  # the SavedModel (TF's first GPU use) only after

    from dermbench.models.frameworks.tf import enable_memory_growth
    from dermbench.utils import console

    warnings = []
    monkeypatch.setattr(console, "get_logger", lambda name: types.SimpleNamespace(
        warning=lambda message, *args: warnings.append(message % args)))
    fake_tf.config.list_physical_devices = lambda kind: [GPU("/physical_device:GPU:0", initialised=True)]
    assert enable_memory_growth(fake_tf) == []  # already initialised: a warning, not a failure
    assert len(warnings) == 1 and "before memory growth could be enabled" in warnings[0]
