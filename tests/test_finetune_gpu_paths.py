"""The finetune loop's GPU paths, checked on a CPU: mixed precision chosen by compute capability
(fp16 + a grad scaler that is really used, bf16 only where native), resume with fewer GPUs than
saved RNG states, one training loader for all epochs (persistent workers reseeded per epoch, so
the numbers equal those of a loader rebuilt every epoch), uint8 batches normalised on the device,
and no host synchronisation on the loss per micro-batch."""

from __future__ import annotations

import os

import pytest
import torch

from dermbench.data.pipeline import loaders
from dermbench.paradigms.finetune import train as ft
from dermbench.paradigms.finetune.settings import FinetuneSettings, loader_workers


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from dermbench.data.contract import load_dataset
    from dermbench.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path_factory.mktemp("gpu_paths") / "synth", n=48, size=32, seed=5,
                                  progress=False)
    return load_dataset(root, quiet=True)


def _settings(**kw) -> FinetuneSettings:
    values = dict(image_size=24, epochs=3, patience=5, batch_size=16, weights="random", augment="paper")
    values.update(kw)
    return FinetuneSettings.from_preset("smoke", **values)


def _model():
    from dermbench.models import build_classifier

    ft.seed_everything(11)
    return build_classifier("test_resnet", weights="random")


def _fit(synth, settings, work, **kw):
    built = _model()
    return ft.fit(built.model, synth, settings, seed=11, work_dir=work, mean=built.data_config["mean"],
                  std=built.data_config["std"], device=torch.device("cpu"), progress=False, **kw)


@pytest.fixture
def gpu(monkeypatch):
    """Pretend torch sees CUDA GPUs of a given compute capability (nothing is run on them)."""
    def configure(capability=(8, 0), count: int = 1, bf16_supported: bool = True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    return configure


# --- 5. precision by compute capability -------------------------------------------------------------

@pytest.mark.parametrize("capability,expected", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_autocast_dtype_follows_compute_capability(gpu, capability, expected):
    gpu(capability=capability, bf16_supported=True)  # torch says "supported" on a T4 too (emulated)
    cuda = torch.device("cuda:0")
    assert ft.amp_dtype(cuda, True) is expected
    scaler = ft.grad_scaler(cuda, ft.amp_dtype(cuda, True))
    assert scaler.is_enabled() is (expected is torch.float16)
    assert ft.amp_dtype(cuda, False) is None and ft.amp_dtype(torch.device("cpu"), True) is None


class _SpyScaler(torch.amp.GradScaler):
    def __init__(self):
        super().__init__("cpu", init_scale=2.0 ** 8)
        self.calls = {"scale": 0, "step": 0, "update": 0}
        self.scaled_values: list[float] = []

    def scale(self, outputs):
        self.calls["scale"] += 1
        scaled = super().scale(outputs)
        self.scaled_values.append(float(scaled.detach() / outputs.detach()))
        return scaled

    def step(self, optimizer, *args, **kwargs):
        self.calls["step"] += 1
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale=None):
        self.calls["update"] += 1
        return super().update(new_scale)


def test_fp16_training_goes_through_the_grad_scaler(synth):
    """The fp16 path (GPUs before compute capability 8.0) scales every micro-batch's loss and steps
    and updates through the scaler; run here with CPU autocast in float16 and a CPU grad scaler."""
    built = _model()
    settings = _settings(epochs=1, accumulate=2, augment="none")
    run = ft._setup(built.model, synth, settings, seed=11, mean=built.data_config["mean"],
                    std=built.data_config["std"], device=torch.device("cpu"), progress=False)
    run.autocast = torch.float16
    run.scaler = _SpyScaler()
    before = {k: v.detach().clone() for k, v in run.model.state_dict().items() if v.is_floating_point()}
    loss_sum, seen, _ = ft._train_epoch(run, settings, seed=11, epoch=1)
    micro_batches = len(run.train_loader)
    steps = -(-micro_batches // settings.accumulate)
    assert run.scaler.calls == {"scale": micro_batches, "step": steps, "update": steps}
    assert run.scaler.scaled_values and all(v == pytest.approx(256.0) for v in run.scaler.scaled_values[:1])
    assert 0 < seen <= len(run.train_labels) and loss_sum > 0
    after = run.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the optimiser really stepped


def test_cpu_and_bf16_paths_have_a_disabled_scaler():
    assert not ft.grad_scaler(torch.device("cpu"), None).is_enabled()
    assert not ft.grad_scaler(torch.device("cpu"), torch.bfloat16).is_enabled()


# --- 11. resume with fewer GPUs than saved RNG states -----------------------------------------------

def test_rng_states_of_missing_gpus_are_skipped_not_fatal(monkeypatch, gpu):
    state = ft._rng_state()
    state["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(3)]
    restored: list[tuple[int, int]] = []
    gpu(count=1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device=None: restored.append((int(s[0]), device)))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("would raise: 3 states, 1 GPU"))
    notes = ft._set_rng_state(state)
    assert restored == [(0, 0)]
    assert notes and "3 device(s)" in notes[0] and "sees 1" in notes[0]

    restored.clear()
    gpu(count=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    notes = ft._set_rng_state(state)
    assert restored == [] and "sees 0" in notes[0]


@pytest.mark.slow
def test_resume_from_a_checkpoint_with_more_cuda_states_than_devices(synth, tmp_path, monkeypatch):
    """A run checkpointed on a 4-GPU worker resumes on a 1-GPU one: no crash, same result as an
    uninterrupted run (the per-epoch reseed makes the CUDA states unnecessary), and a note."""
    settings = _settings(epochs=2, augment="none")
    full = _fit(synth, settings, tmp_path / "full")

    class Stop(KeyboardInterrupt):
        pass

    def stop_after_first(epoch, row):
        if epoch == 1:
            raise Stop()

    with pytest.raises(Stop):
        _fit(synth, settings, tmp_path / "resumed", on_epoch_end=stop_after_first)
    ckpt = tmp_path / "resumed" / ft.CHECKPOINT
    saved = ft.load_checkpoint(ckpt)
    saved["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(4)]
    ft.save_checkpoint(ckpt, saved)

    # this process "sees" one GPU when it saves and restores RNG states (the training runs on the CPU)
    restored = []
    monkeypatch.setattr(ft, "_cuda_devices", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device=None: restored.append(device))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(16, dtype=torch.uint8)])
    resumed = _fit(synth, settings, tmp_path / "resumed")
    assert restored == [0]
    assert resumed.resumed_from_epoch == 1
    assert any("4 device(s)" in note for note in resumed.notes)
    keys = ("train_loss", "val_loss", "val_auroc")
    assert [[r[k] for k in keys] for r in resumed.history] == [[r[k] for k in keys] for r in full.history]


# --- 14. one training loader, persistent workers, workers from the cell's CPUs ------------------------

def test_training_loader_is_built_once_for_all_epochs(synth, tmp_path, monkeypatch):
    calls: list[tuple[str, int]] = []
    real = loaders.make_loader

    def counting(dataset, split, **kw):
        calls.append((split, kw.get("workers", 0)))
        return real(dataset, split, **kw)

    monkeypatch.setattr(loaders, "make_loader", counting)
    pids = tmp_path / "pids.txt"
    real_getitem = loaders.EpochSeededImages.__getitem__

    def getitem(self, i):
        with open(pids, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return real_getitem(self, i)

    monkeypatch.setattr(loaders.EpochSeededImages, "__getitem__", getitem)
    settings = _settings(epochs=3)
    settings.workers = None  # as in the paper preset: sized from the cell's CPUs
    result = _fit(synth, settings, tmp_path / "work", cpu_threads=2)
    assert len(result.history) == 3
    assert [split for split, _ in calls] == ["train", "validation"]       # once each, not once per epoch
    assert [workers for _, workers in calls] == [1, 1]                    # num_cpus 2 -> one worker
    seen = set(pids.read_text().split())
    assert len(seen) == 1 and str(os.getpid()) not in seen               # one worker served all 3 epochs


def test_worker_count_follows_the_cells_cpus_unless_set(monkeypatch):
    assert loader_workers(None, 8) == 7 and loader_workers(None, 1) == 0 and loader_workers(None, 2) == 1
    assert loader_workers(3, 8) == 3 and loader_workers(0, 8) == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    assert loader_workers(None, 0) == 8
    assert FinetuneSettings.from_preset("paper").workers is None


@pytest.mark.slow
def test_persistent_workers_draw_what_fresh_workers_would(synth, tmp_path):
    """Three epochs with the loader's worker kept alive equal three epochs each run in a fresh process
    state (resumed after every epoch, so each epoch gets a new loader and new workers)."""
    settings = _settings(epochs=3, workers=2)
    full = _fit(synth, settings, tmp_path / "full")

    class Stop(KeyboardInterrupt):
        pass

    for stop_at in (1, 2):
        def stop(epoch, row, stop_at=stop_at):
            if epoch == stop_at:
                raise Stop()
        with pytest.raises(Stop):
            _fit(synth, settings, tmp_path / "pieces", on_epoch_end=stop)
    pieces = _fit(synth, settings, tmp_path / "pieces")
    assert pieces.resumed_from_epoch == 2
    keys = ("train_loss", "val_loss", "val_auroc", "lr")
    assert [[r[k] for k in keys] for r in pieces.history] == [[r[k] for k in keys] for r in full.history]


# --- 15. uint8 batches, normalised on the device ------------------------------------------------------

def test_loaders_ship_uint8_and_the_device_normalises(synth):
    from dermbench.data.pipeline.loaders import eval_transform

    built = _model()
    settings = _settings(epochs=1)
    mean, std = built.data_config["mean"], built.data_config["std"]
    run = ft._setup(built.model, synth, settings, seed=11, mean=mean, std=std, device=torch.device("cpu"),
                    progress=False)
    ft._start_epoch(run, settings, seed=11, epoch=1)
    train_batch = next(iter(run.train_loader))["image"]
    val_batch = next(iter(run.val_loader))["image"]
    assert train_batch.dtype == torch.uint8 and val_batch.dtype == torch.uint8
    assert run.train_normalize(train_batch).dtype == torch.float32

    # the batch-wise normalisation on the device equals the per-image transform bit for bit
    per_image = eval_transform(mean, std)
    assert torch.equal(run.eval_normalize(val_batch), torch.stack([per_image(img) for img in val_batch]))
    float_loader = loaders.make_loader(synth, "validation", policy=run.policy, transform=per_image, batch_size=16,
                                       progress=False)
    a, loss_a = ft.predict(run.model, float_loader, run.device)
    b, loss_b = ft.predict(run.model, run.val_loader, run.device, normalize=run.eval_normalize)
    assert a["p_malignant"].tolist() == b["p_malignant"].tolist() and loss_a == loss_b


# --- 16. no host synchronisation on the loss per micro-batch -------------------------------------------

def test_the_loss_is_not_read_back_per_micro_batch(synth, monkeypatch):
    built = _model()
    settings = _settings(epochs=1, augment="none", accumulate=2)
    run = ft._setup(built.model, synth, settings, seed=11, mean=built.data_config["mean"],
                    std=built.data_config["std"], device=torch.device("cpu"), progress=False)
    loss_storage: set[int] = set()
    held = []  # keeps each loss's storage alive, so no other tensor can reuse its address
    real_criterion = run.criterion

    def criterion(logits, y):
        loss = real_criterion(logits, y)
        loss_storage.add(loss.data_ptr())
        held.append(loss.detach())
        return loss

    run.criterion = criterion
    reads = []
    real_item, real_float = torch.Tensor.item, torch.Tensor.__float__

    def item(self):
        if self.data_ptr() in loss_storage:
            reads.append("item")
        return real_item(self)

    def as_float(self):
        if self.data_ptr() in loss_storage:
            reads.append("float")
        return real_float(self)

    monkeypatch.setattr(torch.Tensor, "item", item)
    monkeypatch.setattr(torch.Tensor, "__float__", as_float)
    loss_sum, seen, _ = ft._train_epoch(run, settings, seed=11, epoch=1)
    assert loss_storage and reads == []
    assert 0 < seen <= len(run.train_labels) and loss_sum > 0
