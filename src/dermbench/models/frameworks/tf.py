"""TensorFlow SavedModels as probe backbones: Google Derm Foundation (optional ``[tf]`` extra).

The model (``google/derm-foundation`` on Hugging Face, under the Health AI Developer Foundations
terms) is a TensorFlow SavedModel whose ``serving_default`` signature takes a batch of serialized
``tf.train.Example`` protos — the image as PNG bytes under the feature ``image/encoded`` — and
returns ``embedding`` (6144-d). Its model card feeds 448 × 448 images.

Download the model folder where there is internet (``huggingface-cli download google/derm-foundation
--local-dir derm-foundation``) and pass it with ``--weights PATH``. TensorFlow is imported only
when this backbone is built; without it the error says how to install the extra.

Images are embedded **batched**: one call per loader batch with all serialized examples in one
string tensor, rather than one call per image. The Example protos are encoded by
:func:`encode_example` — a few lines of protobuf wire format, so the serialization can be tested
(and does not depend on TensorFlow's proto classes).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import WeightsNotFoundError
from ..embedders.base import Embedder
from ..spec import ModelSpec
from ..weights import folder_identity

EMBED_DIM = 6144
IMAGE_SIZE = 448
_HOW_TO_GET = ("download it where there is internet with `huggingface-cli download google/derm-foundation "
               "--local-dir derm-foundation` (accept the terms on its Hugging Face page first) and pass "
               "--weights derm-foundation")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def encode_example(features: dict[str, bytes]) -> bytes:
    """Serialize a ``tf.train.Example`` whose features are single ``bytes_list`` values.

    Example{features=1: Features{feature=1: map<string, Feature>}};
    Feature{bytes_list=1: BytesList{value=1: repeated bytes}}; a map entry is {key=1, value=2}.
    """
    entries = b""
    for key, value in sorted(features.items()):
        feature = _field(1, _field(1, bytes(value)))            # Feature.bytes_list.value[0]
        entries += _field(1, _field(1, key.encode()) + _field(2, feature))  # Features.feature map entry
    return _field(1, entries)                                    # Example.features


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def serialize_batch(batch: Any) -> list[bytes]:
    """uint8 ``[B, 3, H, W]`` -> serialized Examples with the PNG under ``image/encoded``."""
    array = batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch)
    if array.ndim != 4 or array.shape[1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"Derm Foundation needs uint8 [B, 3, H, W] batches, got {array.dtype} {array.shape}")
    return [encode_example({"image/encoded": png_bytes(img.transpose(1, 2, 0))}) for img in array]


def _import_tf() -> Any:
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError("the derm_foundation backbone needs TensorFlow: pip install 'dermbench[tf]' "
                          "(or pip install tensorflow)") from exc
    enable_memory_growth(tf)
    return tf


def enable_memory_growth(tf: Any) -> list[str]:
    """Let TensorFlow take GPU memory as it needs it instead of reserving all of every GPU when it
    first touches one (its default), which would starve torch cells in the same process or on the
    same GPU. Must run before TF initialises a GPU; returns the GPUs it was set for. A GPU TF has
    already initialised keeps its setting (TF raises RuntimeError then): logged, not fatal."""
    from ...utils.console import get_logger

    done = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            done.append(str(getattr(gpu, "name", gpu)))
        except RuntimeError as exc:
            get_logger("models").warning("TensorFlow GPU %s was initialised before memory growth could be enabled "
                                         "(%s); it may reserve the whole GPU", getattr(gpu, "name", gpu), exc)
    return done


def build_embedder(spec: ModelSpec, *, weights: str, image_size: int | None = None, resize_mode: str = "crop",
                   **options: Any) -> Embedder:
    """The SavedModel folder ``weights`` (there is no hub download and no random init)."""
    if options:
        raise ValueError(f"{spec.name} takes no options besides image_size and resize_mode; got {sorted(options)}")
    if weights in ("default", "random"):
        what = "has no random init" if weights == "random" else "needs its SavedModel folder"
        raise WeightsNotFoundError(f"Derm Foundation {what}: {_HOW_TO_GET}")
    folder = Path(weights).expanduser()
    if not (folder / "saved_model.pb").is_file():
        raise WeightsNotFoundError(f"{folder} is not a TensorFlow SavedModel folder (no saved_model.pb); {_HOW_TO_GET}")
    tf = _import_tf()
    loaded = tf.saved_model.load(str(folder))
    infer = loaded.signatures["serving_default"]

    def forward(batch: Any) -> np.ndarray:
        examples = serialize_batch(batch)
        out = infer(inputs=tf.constant(examples))
        return np.asarray(out["embedding"].numpy(), dtype=np.float32).reshape(len(examples), -1)

    # the graph and its variables (the weights live in variables/, not in saved_model.pb)
    variables = sorted(p for p in (folder / "variables").glob("*") if p.is_file())
    identity = folder_identity(folder, [folder / "saved_model.pb", *variables])
    return Embedder(name=spec.name, weights_identity=identity, embed_dim=EMBED_DIM, image_size=int(image_size or IMAGE_SIZE),
                    resize_mode=resize_mode, input_kind="uint8", forward=forward,
                    details={"library": "tensorflow", "input": "tf.train.Example image/encoded PNG",
                             "output": "embedding", "tensorflow": tf.__version__})
