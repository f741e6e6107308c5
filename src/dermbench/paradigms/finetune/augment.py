"""Training augmentation on cached pixels (uint8 CHW tensors from the image cache).

``study`` is the study's policy exactly (STUDY.md §3.2, its ``DataLoaderFactory``): its eight
torchvision transforms in its order with its values (:func:`study_policy`). ``paper`` is
dermbench's earlier version of it, kept unchanged so existing runs keep their numbers: the same
steps with the default crop ratio, another affine (translate 10 %, scale 0.9-1.1, no rotation,
no shear) and a blur of sigma 0.1-2.0 on half the images (:func:`paper_policy`). Both run on the
cached working-resolution image instead of the decoded original (the cache is what makes epochs
cheap); for ``study`` that is the one step that is not the study's.

All randomness comes from torch's global generator (in the main process) or the worker's seeded
generator (with DataLoader workers), which the training loop seeds per epoch so a resumed run
draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence


class GaussianBlur3:
    """3×3 Gaussian blur with sigma drawn uniformly from ``sigma``, applied with probability ``p``.

    The same kernel as ``v2.GaussianBlur(kernel_size=3, sigma=...)`` but on a PIL image through
    ``ImageFilter.Kernel``, about ten times faster than the tensor path on a CPU (measured in
    ``benchmarks/finetune.py``'s development). Draws come from torch's generator like v2's.
    """

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5):
        self.sigma, self.p = sigma, p

    def __call__(self, image: Any) -> Any:
        import torch
        from PIL import ImageFilter

        if float(torch.rand(())) >= self.p:
            return image
        sigma = float(torch.empty(()).uniform_(*self.sigma))
        side = [math.exp(-(x * x) / (2.0 * sigma * sigma)) for x in (-1, 0, 1)]
        kernel = [a * b for a in side for b in side]
        return image.filter(ImageFilter.Kernel((3, 3), kernel, scale=sum(kernel)))

    def __repr__(self) -> str:
        return f"GaussianBlur3(sigma={self.sigma}, p={self.p})"


def paper_policy(size: int) -> list[Any]:
    """The study's augmentation steps for a ``size``-px square, on a PIL image (see :func:`train_transform`)."""
    from torchvision.transforms import v2

    return [
        v2.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomVerticalFlip(p=0.5),
        v2.RandomRotation(degrees=15),
        v2.RandomPerspective(distortion_scale=0.5, p=0.5),
        v2.ColorJitter(brightness=(0.8, 1.2)),
        v2.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        GaussianBlur3(sigma=(0.1, 2.0), p=0.5),
    ]


def study_policy(size: int) -> list[Any]:
    """The study's training augmentation, in its order, on a PIL image: torchvision's
    ``transforms`` (v1, the API the study called) with the study's arguments and defaults."""
    from torchvision import transforms

    return [
        transforms.RandomResizedCrop((size, size), scale=(0.8, 1.0), ratio=(0.75, 1.33)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomVerticalFlip(),
        transforms.RandomRotation(15),
        transforms.RandomPerspective(distortion_scale=0.5, p=0.5),
        transforms.ColorJitter(brightness=(0.8, 1.2)),
        transforms.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05), shear=5),
        transforms.GaussianBlur(kernel_size=(3, 3), sigma=(0.1, 1.0)),
    ]


def _to_pil(image: Any) -> Any:
    """uint8 CHW tensor (or HxWx3 array) of the image cache -> PIL image, without a decode."""
    import numpy as np
    from PIL import Image

    array = image if isinstance(image, np.ndarray) else image.permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))


def flip_policy(size: int) -> list[Any]:
    """Flips only: cheap and label-preserving for dermoscopy (lesions have no canonical orientation)."""
    from torchvision.transforms import v2

    return [v2.RandomHorizontalFlip(p=0.5), v2.RandomVerticalFlip(p=0.5)]


POLICIES: dict[str, Callable[[int], list[Any]]] = {"paper": paper_policy, "study": study_policy, "flip": flip_policy,
                                                   "none": lambda size: []}
#: Policies whose steps run on a PIL view (flips alone are cheaper on the tensor).
ON_PIL = {"paper", "study"}


def train_pixels(policy: str, size: int) -> Callable[[Any], Any]:
    """uint8 CHW tensor (cached pixels) -> augmented uint8 CHW tensor: what the training loader's
    workers compute. The batch goes to the device as uint8 and :func:`train_normalizer` turns it into
    the model's input there.

    The geometric and colour steps run on a PIL view of the cached pixels: on a CPU, Pillow's
    rotation/affine/blur are 5-10× faster than the tensor kernels for uint8 images (rotation
    ~0.1 ms vs ~0.9 ms at 224 px), and the DataLoader workers are what feeds the accelerator.
    """
    from torchvision.transforms import v2

    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; available: {', '.join(POLICIES)}")
    steps = POLICIES[policy](size)
    return v2.Compose([_to_pil, *steps, v2.PILToTensor()] if policy in ON_PIL else (steps or [v2.Identity()]))


def train_normalizer(mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], Any]:
    """uint8 image or batch (any device) -> float32 normalised with ``mean``/``std``: one conversion
    to float and the model's normalisation (torchvision's ``ToDtype(scale=True)`` + ``Normalize``,
    the same element-wise arithmetic whether it runs per image in a worker or per batch on a GPU)."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))])


def train_transform(policy: str, size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], Any]:
    """uint8 CHW tensor (cached pixels) -> augmented float32 CHW normalised with ``mean``/``std``
    in one per-image transform (:func:`train_pixels` then :func:`train_normalizer`); the training
    loop itself keeps the two apart so batches travel as uint8."""
    from torchvision.transforms import v2

    return v2.Compose([train_pixels(policy, size), train_normalizer(mean, std)])
