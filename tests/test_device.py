"""utils/device.choose_device: the one device choice (auto = cuda > mps > cpu; an explicit device
that is not there is a UsageError), checked with torch's availability mocked."""

from __future__ import annotations

import pytest
import torch

from dermbench.errors import UsageError
from dermbench.utils.device import available_devices, choose_device, torch_dtype


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


def test_torch_dtype_of_a_setting():
    assert torch_dtype("auto", "cpu") == torch.float32
    assert torch_dtype("auto", "cuda:0") == torch.float16
    assert torch_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(UsageError, match="unknown dtype"):
        torch_dtype("float8", "cpu")
