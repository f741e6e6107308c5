"""What every probe backbone is: an :class:`Embedder` (pixels in, one vector per image out).

An embedder carries the preprocessing that belongs to its weights (working size, resize mode,
mean/std) so the embedding cache can key on it, and an ``identity`` dict that says exactly what
produced the vectors (backbone, weights identity, pooling, preprocessing). Torch backbones get
normalised float batches; array backbones (handcrafted features, Derm Foundation) get the cached
uint8 pixels unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: A frozen torch backbone whose float32 weights exceed this is stored in half precision on a GPU
#: (bf16 where native, else fp16) instead of float32 + autocast copies: DINOv3 ViT-7B is ~27 GiB in
#: float32, which with autocast's half copies does not fit a 40-48 GB card; ~13.5 GiB in bf16 does.
LARGE_BACKBONE_BYTES = 4 * 2**30


@dataclass
class Embedder:
    """A frozen feature extractor.

    ``forward`` maps one batch as produced by ``transform`` (stacked by the loader) to a float
    array ``[B, embed_dim]``. ``input_kind`` is ``"float"`` (normalised float CHW tensors) or
    ``"uint8"`` (the cached pixels as uint8 CHW tensors). ``module`` is the torch module, if any
    (moved to the device, used by the benchmark for the bare forward).
    """

    name: str
    weights_identity: str
    embed_dim: int
    image_size: int
    resize_mode: str = "crop"
    crop_from: int | None = None  # crop mode: resize the short side to this first (256 -> 224 centre crop)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    input_kind: str = "float"
    forward: Callable[[Any], np.ndarray] | None = None
    module: Any = None
    details: dict[str, Any] = field(default_factory=dict)  # pooling, tower, interpolation, licence...
    device: str = "cpu"

    @property
    def policy(self) -> Any:
        from ...data.pipeline.decode import ResizePolicy

        return ResizePolicy(size=int(self.image_size), mode=self.resize_mode, crop_from=self.crop_from)

    @property
    def transform(self) -> Callable[[Any], Any]:
        """Per-image transform the loader applies to a uint8 CHW tensor."""
        if self.input_kind == "uint8":
            return _keep_uint8
        from ...data.pipeline.loaders import eval_transform

        return eval_transform(self.mean, self.std)

    @property
    def loader_transform(self) -> Callable[[Any], Any]:
        """What the extraction loader applies per image: nothing — batches stay uint8 and are
        normalised as a whole on the model's device in :meth:`__call__` (one vectorised op per
        batch instead of one per image, and a quarter of the bytes to copy to a GPU)."""
        return _keep_uint8

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that changes the vectors (part of the embedding cache key)."""
        out = {"backbone": self.name, "weights": self.weights_identity, "embed_dim": int(self.embed_dim),
               "image_size": int(self.image_size), "resize_mode": self.resize_mode, "input_kind": self.input_kind}
        if self.crop_from:
            out["crop_from"] = int(self.crop_from)
        if self.input_kind == "float":
            out["mean"] = [round(float(v), 6) for v in self.mean]
            out["std"] = [round(float(v), 6) for v in self.std]
        if self.module is not None:
            # GPU autocast changes the vectors slightly: it is part of the key
            out["compute"] = compute_precision(self.device)
        out.update({k: v for k, v in self.details.items() if k not in ("licence", "source", "description")})
        return out

    def normalise(self, batch: Any) -> Any:
        """uint8 ``[B, 3, H, W]`` -> float32 ``(x / 255 - mean) / std`` on this backbone's device."""
        import torch

        x = batch.to(self.device, non_blocking=True).to(torch.float32).div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def to(self, device: str) -> "Embedder":
        """Move the backbone to ``device``; a large one (:data:`LARGE_BACKBONE_BYTES`) is stored in
        half precision on a GPU, cast on the host before the move so float32 never reaches the GPU
        (recorded as ``weights_dtype``: part of the identity, so of the embedding cache key)."""
        if self.module is not None:
            import torch

            dev = torch.device(device)
            half = half_storage_dtype(self.module, dev)
            if half is not None:
                cast_parameters(self.module, half)
                self.details["weights_dtype"] = str(half).replace("torch.", "")
            self.module.to(dev)
            if dev.type == "cuda":
                self.module.to(memory_format=torch.channels_last)
                torch.backends.cudnn.benchmark = True  # every batch has the working size
        self.device = str(device)
        return self

    def __call__(self, batch: Any) -> np.ndarray:
        if self.forward is None:
            raise RuntimeError(f"backbone {self.name!r} has no forward function")
        if self.input_kind == "float" and getattr(batch, "dtype", None) is not None and str(batch.dtype) == "torch.uint8":
            batch = self.normalise(batch)
        out = np.asarray(self.forward(batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[1] != self.embed_dim:
            raise RuntimeError(f"backbone {self.name!r} returned shape {out.shape}, expected [B, {self.embed_dim}]")
        return out


def _keep_uint8(image: Any) -> Any:
    """Identity transform: array backbones read the cached uint8 pixels themselves."""
    if isinstance(image, np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return image


def compute_precision(device: str) -> str:
    """The arithmetic a torch backbone runs in on ``device``: float32, or CUDA autocast in bf16 where
    the GPU computes it natively (compute capability 8.0+), else fp16."""
    if not str(device).startswith("cuda"):
        return "float32"
    from ...utils.device import native_bf16

    return "autocast-bfloat16" if native_bf16(device) else "autocast-float16"


def half_storage_dtype(module: Any, device: Any) -> Any:
    """The dtype a frozen ``module`` is stored in on ``device``: half precision (bf16 where native,
    else fp16) for a large backbone on a GPU, None (as it is) otherwise."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    if size <= LARGE_BACKBONE_BYTES:
        return None
    from ...utils.device import autocast_dtype

    return autocast_dtype(device)


def cast_parameters(module: Any, dtype: Any) -> None:
    """Store ``module``'s parameters in ``dtype``, leaving its buffers as they are: a model keeps
    some in float32 on purpose (rotary frequencies such as DINOv3's ``rope.periods``), which
    ``module.to(dtype=...)`` would round to half precision too."""
    for parameter in module.parameters():
        parameter.data = parameter.data.to(dtype)


def torch_forward(module: Any, pool: Callable[[Any], Any] | None = None) -> Callable[[Any], np.ndarray]:
    """Wrap a torch module as an embedder forward: inference mode, channels-last and autocast on
    GPU (bf16 where native, else fp16), autocast in the weights' own dtype for a module stored in
    half precision, output as float32 numpy."""

    def forward(batch: Any) -> np.ndarray:
        import torch

        module.eval()
        parameter = next(iter(module.parameters()), torch.zeros(0))
        device = parameter.device
        x = batch.to(device, non_blocking=True)
        with torch.inference_mode():
            if device.type == "cuda":
                from ...utils.device import autocast_dtype

                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=autocast_dtype(device)):
                    out = module(x)
            elif parameter.dtype in (torch.bfloat16, torch.float16):
                with torch.autocast(device.type, dtype=parameter.dtype):
                    out = module(x)
            else:
                out = module(x)
            if pool is not None:
                out = pool(out)
            return out.float().cpu().numpy()

    return forward
