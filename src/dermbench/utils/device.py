"""The one device choice of every paradigm: ``choose_device("auto" | "cpu" | "cuda[:i]" | "mps")``.

``auto`` takes CUDA when torch sees a GPU, else Apple's MPS when it is built and available, else
the CPU. A device asked for by name must exist: an unavailable one is a
:class:`~dermbench.errors.UsageError` that says what is available, never a silent fallback (a
benchmark that quietly ran on the CPU reports other numbers and other timings).
"""

from __future__ import annotations

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


def torch_dtype(name: str, device: str):
    """The torch dtype for a ``dtype`` setting on ``device``: ``auto`` is float16 on CUDA, else float32."""
    import torch

    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise UsageError(f"unknown dtype {name!r}; use auto, {', '.join(dtypes)}")
    return dtypes[name]
