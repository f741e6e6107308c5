"""What every Hugging Face model of dermbench shares: where it loads from, and the missing-weights error."""

from __future__ import annotations

from pathlib import Path

from ....errors import WeightsNotFoundError
from ...vlm.dual import RANDOM_IDENTITY
from ...weights import hf_cached_file, require_hub

__all__ = ["RANDOM_IDENTITY", "hf_source", "loaded_from", "missing_weights"]


def missing_weights(model_id: str, exc: Exception, how: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"cannot load weights of {model_id!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
        f"With no network, download them first on a machine that has one ({how}) and copy the cache "
        f"(~/.cache/huggingface) here, or pass --weights PATH with a local copy.")


def hf_source(model_id: str, weights: str) -> tuple[str, bool]:
    """``(where the model is loaded from, random init)``: the hub id, or the local folder ``weights``.

    ``model_id`` itself may be a local folder (``clip:/path/to/model``). A hub id that is not in the
    local cache fails in about a second when the hub cannot be reached (no hang)."""
    if weights == "random":
        return model_id, True
    source = model_id if weights == "default" else weights
    if not Path(source).expanduser().exists() and not hf_cached_file(source, ("config.json",)):
        require_hub(f"the Hugging Face model {source!r}",
                    f"Download it where there is internet (`huggingface-cli download {source}`) and copy the "
                    f"Hugging Face cache here, or pass --weights PATH with a local copy of the model folder.")
    return source, False


def loaded_from(source: str) -> str:
    """The weights identity of a model loaded from ``source``: the resolved folder, or the hub id."""
    return str(Path(source).resolve()) if Path(source).exists() else source
