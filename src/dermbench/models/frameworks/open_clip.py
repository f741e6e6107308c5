"""open_clip: image towers as probe backbones, image + text towers as zeroshot dual encoders.

BiomedCLIP, DermLIP, the PanDerm-based CLIP and any open_clip model. The model id is
``hf-hub:org/repo`` or ``arch[/pretrained tag]``; the model is built by :func:`create_open_clip`,
so weights are found the same way in both paradigms. Weights:

* ``hf-hub:`` models — from the local Hugging Face cache when both ``open_clip_config.json`` and
  the checkpoint are there (loaded as a local folder, so nothing contacts the hub), else
  downloaded if the hub is reachable, else :class:`~dermbench.errors.WeightsNotFoundError`.
* ``arch`` — its pretrained tag (the one in the model id, else the first open_clip lists;
  ``weights`` may name another tag), or a local checkpoint file (``weights=PATH``, e.g. a PanDerm
  open_clip checkpoint).
* a folder with ``open_clip_config.json`` + checkpoint (``weights=DIR``) for any model id.
* ``random`` — random init; with ``model_cfg`` (an open_clip model config dict) for tiny test models.

As a backbone the embedding is ``encode_image(x, normalize=False)`` (the projected image
embedding, not L2-normalised: the heads standardise features themselves), with the mean/std and
working size of the model's own preprocessing config.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2

from ...errors import WeightsNotFoundError
from ...utils.device import torch_dtype
from ..embedders.base import Embedder, torch_forward
from ..spec import ModelSpec
from ..vlm.dual import DualEncoder
from ..weights import file_identity, folder_identity, hf_cached_file, require_hub

_CKPT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _register_config(model_cfg: dict[str, Any]) -> str:
    """Register an open_clip model config dict under a content-derived name; return the name."""
    from ...utils.atomic import atomic_write_text
    from ...utils.paths import cache_dir

    text = json.dumps(model_cfg, sort_keys=True)
    name = "dermbench-cfg-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    path = cache_dir("open_clip_configs") / f"{name}.json"
    if not path.is_file():
        atomic_write_text(path, text)
    open_clip.add_model_config(path)
    return name


def split_model_id(model_id: str) -> tuple[str, str | None]:
    """(name, pretrained tag): ``hf-hub:org/repo`` -> (itself, None), ``arch/tag`` -> (arch, tag)."""
    if model_id.startswith("hf-hub:"):
        return model_id, None
    arch, _, tag = model_id.partition("/")
    return arch, tag or None


def create_open_clip(model_id: str, weights: str, model_cfg: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``(open_clip model, weights identity)`` of ``model_id`` with ``weights`` (see the module doc)."""
    name, tag = split_model_id(model_id)
    if weights == "random":
        arch = _register_config(model_cfg) if model_cfg else name
        if arch.startswith("hf-hub:"):
            raise ValueError("a random-init open_clip model needs an architecture name (open_clip:ViT-B-16) "
                             "or a model_cfg")
        return open_clip.create_model(arch, pretrained=None), "random init"
    if weights != "default":
        path = Path(weights).expanduser()
        if path.is_dir():
            return _from_folder(path)
        if path.suffix:
            return _from_checkpoint(name, path, model_cfg)
        tag = weights  # a pretrained tag of the architecture
    if name.startswith("hf-hub:"):
        return _from_hub(name)
    return _from_tag(name, tag)


def _from_folder(path: Path) -> tuple[Any, str]:
    if not (path / "open_clip_config.json").is_file():
        raise WeightsNotFoundError(f"{path} has no open_clip_config.json; pass a folder downloaded from the "
                                   f"model's hub page (config + checkpoint) or a checkpoint file with an "
                                   f"open_clip:<arch> model name")
    ckpts = [path / n for n in _CKPT_NAMES if (path / n).is_file()]
    # the checkpoint open_clip loads (the first of _CKPT_NAMES) and the config that shapes it
    identity = folder_identity(path, [path / "open_clip_config.json", *ckpts[:1]])
    return open_clip.create_model(f"local-dir:{path}"), identity


def _from_checkpoint(name: str, path: Path, model_cfg: dict[str, Any] | None) -> tuple[Any, str]:
    if not path.is_file():
        raise WeightsNotFoundError(f"open_clip checkpoint {path} does not exist")
    arch = _register_config(model_cfg) if model_cfg else name
    if arch.startswith("hf-hub:"):
        repo = arch[len("hf-hub:"):]
        cfg = hf_cached_file(repo, ("open_clip_config.json",))
        if not cfg:
            raise WeightsNotFoundError(f"to load {path} as {name} dermbench needs its architecture: put "
                                       f"open_clip_config.json of {repo} next to the checkpoint and pass the "
                                       f"folder, or use an open_clip:<arch> model name")
        arch = _register_config(json.loads(Path(cfg).read_text())["model_cfg"])
    return open_clip.create_model(arch, pretrained=str(path)), file_identity(path)


def _from_hub(name: str) -> tuple[Any, str]:
    repo = name[len("hf-hub:"):]
    config = hf_cached_file(repo, ("open_clip_config.json",))
    ckpt = hf_cached_file(repo, _CKPT_NAMES)
    if config and ckpt and Path(config).parent == Path(ckpt).parent:
        return open_clip.create_model(f"local-dir:{Path(config).parent}"), f"{name}@{Path(config).parent.name[:12]}"
    require_hub(f"the open_clip model {name!r}",
                f"Download it where there is internet: `huggingface-cli download {repo}` and copy the Hugging "
                f"Face cache here, or pass --weights to a folder with open_clip_config.json and the checkpoint.")
    return open_clip.create_model(name), name


def _from_tag(arch: str, tag: str | None) -> tuple[Any, str]:
    tags = open_clip.list_pretrained_tags_by_model(arch)
    tag = tag or (tags[0] if tags else None)
    if not tag:
        raise WeightsNotFoundError(f"open_clip architecture {arch!r} has no pretrained tag; "
                                   f"pass --weights PATH or random")
    if tag not in tags:
        raise WeightsNotFoundError(f"open_clip {arch!r} has no pretrained tag {tag!r}; available: {', '.join(tags)}")
    hf_id = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "").rstrip("/")
    cached = None
    if hf_id:
        repo, filename = hf_id, ""
        if hf_id.count("/") > 1:
            org, repo_name, *rest = hf_id.split("/")
            repo, filename = f"{org}/{repo_name}", "/".join(rest)
        cached = hf_cached_file(repo, tuple(n for n in (filename,) if n) + _CKPT_NAMES)
    if cached:
        return open_clip.create_model(arch, pretrained=cached), f"open_clip:{arch}/{tag}"
    require_hub(f"the open_clip weights {arch}/{tag}",
                f"Download them where there is internet (`python -c \"import open_clip; "
                f"open_clip.create_model('{arch}', pretrained='{tag}')\"`) and copy the Hugging Face cache here.")
    return open_clip.create_model(arch, pretrained=tag), f"open_clip:{arch}/{tag}"


class _ImageTower(torch.nn.Module):
    """The projected image embedding of a CLIP model (not L2-normalised)."""

    def __init__(self, clip: Any):
        super().__init__()
        self.clip = clip

    def forward(self, x: Any) -> Any:
        return self.clip.encode_image(x, normalize=False)


def build_embedder(spec: ModelSpec, *, weights: str, image_size: int | None = None, resize_mode: str = "crop",
                   model_cfg: dict[str, Any] | None = None, **options: Any) -> Embedder:
    """The image tower as a frozen backbone (``model_cfg``: an open_clip config dict for tiny test models)."""
    if options:
        raise ValueError(f"open_clip backbones take image_size, resize_mode and model_cfg; got {sorted(options)}")
    model, identity = create_open_clip(spec.model_id, weights, model_cfg)
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
    tower = _ImageTower(model).eval()
    with torch.inference_mode():
        dim = int(tower(torch.zeros(1, 3, size, size)).shape[-1])
    return Embedder(name=spec.name, weights_identity=identity, embed_dim=dim, image_size=size,
                    resize_mode=resize_mode, mean=mean, std=std, input_kind="float", forward=torch_forward(tower),
                    module=tower, details={"library": "open_clip", "model_name": spec.model_id,
                                           "pooling": "encode_image (projected, not normalised)"})


class OpenClipEncoder(DualEncoder):
    """An open_clip model (BiomedCLIP, DermLIP, any ``arch/pretrained``) with its own transform and
    tokenizer; sigmoid scoring when the model carries a ``logit_bias`` (open_clip SigLIP models)."""

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, **kw: Any):
        super().__init__(model, **kw)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.logit_scale = float(model.logit_scale.detach().exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach().item()) if bias is not None else None
        self.scoring = "sigmoid" if self.logit_bias is not None else "softmax"

    def _pixel_batch(self, images: list[Any]) -> Any:
        return torch.stack([self.preprocess(im) for im in images])

    def image_preprocessor(self) -> Any:
        return self.preprocess

    def _image_features(self, pixels: Any) -> Any:
        return self.model.encode_image(pixels.to(next(self.model.parameters()).dtype))

    def _text_features(self, texts: list[str]) -> Any:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


def _tokenizer(model_id: str, weights: str) -> Any:
    """The tokenizer that belongs to the weights: the local folder's, the cached hub config's, the arch's."""
    folder = Path(weights).expanduser() if weights not in ("default", "random") else None
    if folder is not None and folder.is_dir():
        return open_clip.get_tokenizer(f"local-dir:{folder}")
    name, _ = split_model_id(model_id)
    if name.startswith("hf-hub:"):
        config = hf_cached_file(name[len("hf-hub:"):], ("open_clip_config.json",))
        return open_clip.get_tokenizer(f"local-dir:{Path(config).parent}" if config else name)
    return open_clip.get_tokenizer(name)


def build_dual_encoder(spec: ModelSpec, settings: Any, *, weights: str, device: str, seed: int = 42) -> OpenClipEncoder:
    """Image and text towers with the model's own eval transform and tokenizer. ``weights`` may be a
    local folder (open_clip_config.json + checkpoint), a checkpoint file, a pretrained tag or ``random``."""
    model, identity = create_open_clip(spec.model_id, weights, None)
    tokenizer = _tokenizer(spec.model_id, weights)
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    dev = torch.device(device)
    dtype = torch_dtype(settings.dtype, dev, fp16_safe=spec.fp16_safe)
    # open_clip builds in float32 (no dtype-aware loading to bypass): one move, one cast
    model = model.to(device=dev, dtype=dtype)
    return OpenClipEncoder(model, preprocess, tokenizer, device=dev, weights=identity, model_id=spec.model_id,
                           batch_size=settings.batch_size, dtype=str(dtype).replace("torch.", ""))
