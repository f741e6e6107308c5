"""The one device choice of every paradigm: ``choose_device("auto" | "cpu" | "cuda[:i]" | "mps")``.

``auto`` takes CUDA when torch sees a GPU, else Apple's MPS when it is built and available, else
the CPU. A device asked for by name must exist: an unavailable one is a
:class:`~dermbench.errors.UsageError` that says what is available, never a silent fallback (a
benchmark that quietly ran on the CPU reports other numbers and other timings).
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError

AUTO = "auto"


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_built() and mps.is_available())


def available_devices() -> list[str]:
    """The devices this machine can run on, best first (``cuda:0`` ..., ``mps``, ``cpu``)."""
    import torch

    out = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available(torch):
        out.append("mps")
    return out + ["cpu"]


def choose_device(requested: str | None = AUTO) -> str:
    """The device to run on, as a string torch accepts (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``)."""
    text = str(requested or AUTO).strip().lower()
    if text == "cpu":
        return "cpu"
    import torch

    if text == AUTO:
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available(torch) else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:<index> or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {requested!r} was asked for, but torch sees no CUDA GPU here; "
                             f"use --device cpu (or auto). Available: {', '.join(available_devices())}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {requested!r} was asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA GPU(s); available: {', '.join(available_devices())}")
        return text
    if device.type == "mps":
        if not _mps_available(torch):
            raise UsageError(f"device {requested!r} was asked for, but MPS is not available here; "
                             f"available: {', '.join(available_devices())}")
        return "mps"
    raise UsageError(f"device {requested!r} is not supported; use auto, cpu, cuda, cuda:<index> or mps")


def activate_device(device: str) -> str:
    """Make ``device`` the current CUDA device of this process (``cuda:1`` -> ``torch.cuda.set_device(1)``)
    before anything touches CUDA: the DataLoader's pin-memory thread, capability queries and libraries
    that allocate on the current device would otherwise create a context on GPU 0 as well. ``cuda``
    without an index, ``mps`` and ``cpu`` change nothing. Returns ``device``."""
    text = str(device)
    if text.startswith("cuda:"):
        import torch

        torch.cuda.set_device(torch.device(text))
    return text


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: the entries of the
    variable when it is set (indices or UUIDs), else ``0 .. n-1`` for the GPUs torch counts (no CUDA
    context is created to count them)."""
    import os

    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [part.strip() for part in listed.split(",") if part.strip() and part.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def native_bf16(device: Any) -> bool:
    """Whether the CUDA ``device`` computes bfloat16 natively: compute capability 8.0 or later
    (Ampere, Hopper, Ada ...). ``torch.cuda.is_bf16_supported()`` also says yes on a T4 or V100,
    where bf16 is emulated and slower than fp32, which is why this asks the capability instead."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return False
    major, _minor = torch.cuda.get_device_capability(dev if dev.index is not None else None)
    return major >= 8


def autocast_dtype(device: Any) -> Any:
    """The half-precision dtype for mixed precision on the CUDA ``device``: bfloat16 where it is
    native (:func:`native_bf16`), else float16 (training pairs it with a grad scaler)."""
    import torch

    return torch.bfloat16 if native_bf16(device) else torch.float16


def torch_dtype(name: str, device: str, *, fp16_safe: bool = False):
    """The torch dtype a model is loaded in for a ``dtype`` setting on ``device``.

    ``auto``: bfloat16 on a GPU with native bf16 (:func:`native_bf16`); on an older GPU float16 only
    for models known to be safe in it (``fp16_safe``: CLIP-style dual encoders; see
    :attr:`dermbench.models.spec.ModelSpec.fp16_safe`), else float32 — Gemma-3-based VLMs
    (MedGemma) answer nothing in float16 and SigLIP towers risk overflow; float32 on a CPU or MPS.
    An explicit ``float32``/``bfloat16``/``float16`` is taken as it is."""
    import torch

    if name == "auto":
        if torch.device(device).type != "cuda":
            return torch.float32
        if native_bf16(device):
            return torch.bfloat16
        return torch.float16 if fp16_safe else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise UsageError(f"unknown dtype {name!r}; use auto, {', '.join(dtypes)}")
    return dtypes[name]
