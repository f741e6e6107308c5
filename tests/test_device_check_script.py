"""benchmarks/device_check.py: skips cleanly without a GPU and picks the right timm reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_without_a_gpu_it_says_skipped_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a GPU machine
    out = subprocess.run([sys.executable, str(BENCHMARKS / "device_check.py")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "skipped: no GPU" in out.stdout


@pytest.fixture
def device_check(monkeypatch):
    from dermbench.paradigms import PARADIGMS

    monkeypatch.setattr(PARADIGMS, "_entries", dict(PARADIGMS._entries))  # its test paradigm does not stay
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import device_check

    return device_check


def test_reference_is_the_gpu_class_figure_or_a_stated_floor(device_check):
    value, source, needed = device_check.reference("train", "NVIDIA GeForce RTX 3090", (8, 6))
    assert value == 819.24 and "rtx3090" in source and needed == device_check.TRAIN_PASS
    value, source, needed = device_check.reference("infer", "NVIDIA GeForce RTX 4090", (8, 9))
    assert value == 4844.53 and needed == device_check.EXTRACT_PASS
    value, source, needed = device_check.reference("train", "NVIDIA H200", (9, 0))   # no published figure
    assert value == 819.24 and "floor" in source and needed == 1.0
    value, source, needed = device_check.reference("train", "Tesla T4", (7, 5))      # older GPU: no verdict
    assert value is None and device_check.verdict_for(100.0, value, needed) == "SKIP"
    assert device_check.verdict_for(600.0, 819.24, 0.7) == "PASS"
    assert device_check.verdict_for(500.0, 819.24, 0.7) == "FAIL"
