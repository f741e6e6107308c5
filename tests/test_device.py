"""utils/device.choose_device: the one device choice (auto = cuda > mps > cpu; an explicit device
that is not there is a UsageError), checked with torch's availability mocked."""

from __future__ import annotations

import pytest
import torch

from dermbench.errors import UsageError
from dermbench.utils.device import (activate_device, autocast_dtype, available_devices, choose_device,
                                    native_bf16, torch_dtype, visible_gpus)


@pytest.fixture
def machine(monkeypatch):
    """Set what torch reports: machine(cuda=2, mps=True)."""
    def configure(cuda: int = 0, mps: bool = False, mps_built: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.backends.mps, "is_built", lambda: mps_built)
    return configure


@pytest.mark.parametrize("cuda,mps,expected", [(0, False, "cpu"), (0, True, "mps"), (1, True, "cuda"),
                                               (2, False, "cuda")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    for requested in ("auto", "AUTO", "", None):
        assert choose_device(requested) == expected


def test_mps_that_is_not_built_is_not_chosen(machine):
    machine(mps=True, mps_built=False)
    assert choose_device("auto") == "cpu"
    with pytest.raises(UsageError, match="MPS is not available"):
        choose_device("mps")


def test_explicit_devices(machine):
    machine(cuda=2, mps=False)
    assert choose_device("cpu") == "cpu"
    assert choose_device("cuda") == "cuda" and choose_device("cuda:1") == "cuda:1"
    assert available_devices() == ["cuda:0", "cuda:1", "cpu"]
    with pytest.raises(UsageError, match="has 2 CUDA GPU"):
        choose_device("cuda:2")
    with pytest.raises(UsageError, match="MPS is not available here; available: cuda:0, cuda:1, cpu"):
        choose_device("mps")


def test_missing_cuda_is_a_clear_error_not_a_silent_cpu_run(machine):
    machine(cuda=0, mps=True)
    with pytest.raises(UsageError, match="torch sees no CUDA GPU here; use --device cpu") as err:
        choose_device("cuda")
    assert "Available: mps, cpu" in str(err.value)
    assert choose_device("mps") == "mps"


def test_unknown_device_names(machine):
    machine()
    with pytest.raises(UsageError, match="unknown device 'gpu'"):
        choose_device("gpu")
    with pytest.raises(UsageError, match="not supported"):
        choose_device("meta")


def test_torch_dtype_of_a_setting(machine, monkeypatch):
    machine(cuda=1)
    capability = {"value": (8, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability["value"])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # also "yes" on a T4 (emulated)
    assert torch_dtype("auto", "cpu") == torch.float32
    assert torch_dtype("auto", "cuda:0") == torch.bfloat16                     # Ampere and later
    assert torch_dtype("auto", "cuda:0", fp16_safe=True) == torch.bfloat16
    capability["value"] = (7, 5)                                                # T4: no native bf16
    assert torch_dtype("auto", "cuda:0") == torch.float32                      # MedGemma, SigLIP: never fp16
    assert torch_dtype("auto", "cuda", fp16_safe=True) == torch.float16       # CLIP-style towers
    assert torch_dtype("float16", "cuda:0") == torch.float16                   # explicit: as asked
    assert torch_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(UsageError, match="unknown dtype"):
        torch_dtype("float8", "cpu")


@pytest.mark.parametrize("capability,native", [((6, 0), False), ((7, 0), False), ((7, 5), False), ((8, 0), True),
                                               ((8, 9), True), ((9, 0), True)])
def test_native_bf16_is_compute_capability_8_or_later(machine, monkeypatch, capability, native):
    machine(cuda=2)
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or capability)
    assert native_bf16("cuda:1") is native
    assert autocast_dtype("cuda:1") == (torch.bfloat16 if native else torch.float16)
    assert asked[0] == torch.device("cuda:1")  # the chosen GPU's capability, not GPU 0's
    assert native_bf16("cpu") is False


def test_activate_device_sets_the_current_cuda_device_before_use(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: chosen.append(device))
    assert activate_device("cuda:1") == "cuda:1" and chosen == [torch.device("cuda:1")]
    for other in ("cuda", "cpu", "mps"):
        assert activate_device(other) == other
    assert chosen == [torch.device("cuda:1")]


def test_visible_gpus_follow_cuda_visible_devices(machine, monkeypatch):
    machine(cuda=3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-5f3c")
    assert visible_gpus() == ["2", "GPU-5f3c"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
