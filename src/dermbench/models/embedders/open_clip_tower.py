"""open_clip image towers: BiomedCLIP, DermLIP, PanDerm-based CLIP, any open_clip architecture.

The embedding is ``encode_image(x, normalize=False)`` (the projected image embedding, not
L2-normalised: the heads standardise features themselves). Mean/std and working size come from
the model's own preprocessing config.

Weights:

* ``hf-hub:org/repo`` names — from the local Hugging Face cache when both
  ``open_clip_config.json`` and the checkpoint are there (loaded as a local folder, so nothing
  contacts the hub), else downloaded if the hub is reachable, else :class:`WeightsNotFoundError`.
* ``open_clip:<arch>`` — the architecture's first pretrained tag (``weights`` may name another
  tag), or a local checkpoint file (``weights=PATH``, e.g. a PanDerm open_clip checkpoint).
* a folder with ``open_clip_config.json`` + checkpoint (``weights=DIR``) for any name.
* ``random`` — random init; with ``model_cfg`` (an open_clip model config dict) for tiny test models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..weights import WeightsNotFoundError, file_identity, folder_identity, hf_cached_file, require_hub
from .base import Embedder, torch_forward

_CKPT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _register_config(model_cfg: dict[str, Any]) -> str:
    """Register an open_clip model config dict under a content-derived name; return the name."""
    import open_clip

    from ...utils.atomic import atomic_write_text
    from ...utils.paths import cache_dir

    text = json.dumps(model_cfg, sort_keys=True)
    name = "dermbench-cfg-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    path = cache_dir("open_clip_configs") / f"{name}.json"
    if not path.is_file():
        atomic_write_text(path, text)
    open_clip.add_model_config(path)
    return name


def create_open_clip(model_name: str, weights: str | None, model_cfg: dict[str, Any] | None) -> tuple[Any, str]:
    import open_clip

    if weights == "random":
        arch = _register_config(model_cfg) if model_cfg else model_name.removeprefix("open_clip:")
        if arch.startswith("hf-hub:"):
            raise ValueError("a random-init open_clip tower needs an architecture name (open_clip:ViT-B-16) or a model_cfg")
        return open_clip.create_model(arch, pretrained=None), "random init"
    if weights and weights != "default":
        path = Path(weights).expanduser()
        if path.is_dir():
            if not (path / "open_clip_config.json").is_file():
                raise WeightsNotFoundError(f"{path} has no open_clip_config.json; pass a folder downloaded from the "
                                           f"model's hub page (config + checkpoint) or a checkpoint file with an "
                                           f"open_clip:<arch> backbone name")
            ckpts = [path / n for n in _CKPT_NAMES if (path / n).is_file()]
            # the checkpoint open_clip loads (the first of _CKPT_NAMES) and the config that shapes it
            identity = folder_identity(path, [path / "open_clip_config.json", *ckpts[:1]])
            return open_clip.create_model(f"local-dir:{path}"), identity
        if path.suffix:  # a checkpoint file
            if not path.is_file():
                raise WeightsNotFoundError(f"open_clip checkpoint {path} does not exist")
            arch = _register_config(model_cfg) if model_cfg else model_name.removeprefix("open_clip:")
            if arch.startswith("hf-hub:"):
                repo = arch[len("hf-hub:"):]
                cfg = hf_cached_file(repo, ("open_clip_config.json",))
                if not cfg:
                    raise WeightsNotFoundError(f"to load {path} as {model_name} dermbench needs its architecture: put "
                                               f"open_clip_config.json of {repo} next to the checkpoint and pass the "
                                               f"folder, or use an open_clip:<arch> backbone name")
                arch = _register_config(json.loads(Path(cfg).read_text())["model_cfg"])
            return open_clip.create_model(arch, pretrained=str(path)), file_identity(path)
        tag = weights  # a pretrained tag of the architecture
    else:
        tag = None

    if model_name.startswith("hf-hub:"):
        repo = model_name[len("hf-hub:"):]
        config = hf_cached_file(repo, ("open_clip_config.json",))
        ckpt = hf_cached_file(repo, _CKPT_NAMES)
        if config and ckpt and Path(config).parent == Path(ckpt).parent:
            return open_clip.create_model(f"local-dir:{Path(config).parent}"), f"{model_name}@{Path(config).parent.name[:12]}"
        require_hub(f"the open_clip model {model_name!r}",
                    f"Download it where there is internet: `huggingface-cli download {repo}` and copy the Hugging "
                    f"Face cache here, or pass --weights to a folder with open_clip_config.json and the checkpoint.")
        return open_clip.create_model(model_name), model_name

    arch = model_name.removeprefix("open_clip:")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    tag = tag or (tags[0] if tags else None)
    if not tag:
        raise WeightsNotFoundError(f"open_clip architecture {arch!r} has no pretrained tag; pass --weights PATH or random")
    if tag not in tags:
        raise WeightsNotFoundError(f"open_clip {arch!r} has no pretrained tag {tag!r}; available: {', '.join(tags)}")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hf_id = cfg.get("hf_hub", "").rstrip("/")
    cached = None
    if hf_id:
        repo, _, filename = hf_id.partition("/") if hf_id.count("/") > 1 else (hf_id, "", "")
        if hf_id.count("/") > 1:
            org, name, *rest = hf_id.split("/")
            repo, filename = f"{org}/{name}", "/".join(rest)
        cached = hf_cached_file(repo, tuple(n for n in (filename,) if n) + _CKPT_NAMES)
    if cached:
        return open_clip.create_model(arch, pretrained=cached), f"open_clip:{arch}/{tag}"
    require_hub(f"the open_clip weights {arch}/{tag}",
                f"Download them where there is internet (`python -c \"import open_clip; "
                f"open_clip.create_model('{arch}', pretrained='{tag}')\"`) and copy the Hugging Face cache here.")
    return open_clip.create_model(arch, pretrained=tag), f"open_clip:{arch}/{tag}"


def build(model_name: str, *, weights: str | None = None, image_size: int | None = None, resize_mode: str = "crop",
          model_cfg: dict[str, Any] | None = None, name: str | None = None, **_: Any) -> Embedder:
    import torch

    model, identity = create_open_clip(model_name, weights, model_cfg)
    model.eval()
    visual = model.visual
    pre = getattr(visual, "preprocess_cfg", None) or {}
    mean = tuple(pre.get("mean", getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)))
    std = tuple(pre.get("std", getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)))
    native = getattr(visual, "image_size", 224)
    native = native[0] if isinstance(native, (tuple, list)) else native
    pre_size = pre.get("size", native)
    pre_size = pre_size[0] if isinstance(pre_size, (tuple, list)) else pre_size
    size = int(image_size or pre_size)

    class _Tower(torch.nn.Module):
        def __init__(self, clip: Any):
            super().__init__()
            self.clip = clip

        def forward(self, x: Any) -> Any:
            return self.clip.encode_image(x, normalize=False)

    tower = _Tower(model).eval()
    with torch.inference_mode():
        dim = int(tower(torch.zeros(1, 3, size, size)).shape[-1])
    return Embedder(name=name or model_name, weights_identity=identity, embed_dim=dim, image_size=size,
                    resize_mode=resize_mode, mean=mean, std=std, input_kind="float", forward=torch_forward(tower),
                    module=tower, details={"library": "open_clip", "model_name": model_name,
                                           "pooling": "encode_image (projected, not normalised)"})
