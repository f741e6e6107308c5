"""What every generative VLM backend takes and returns (light: no torch, no HTTP client).

A backend (:mod:`dermbench.models.frameworks.hf.generative`, :mod:`dermbench.models.frameworks.http`)
answers :class:`VLMRequest` s with :class:`VLMAnswer` s; an answer's tokens are :class:`TokenLogprob` s,
which :mod:`dermbench.paradigms.zeroshot.parsing` reads into P(malignant).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, log-probability and the top alternatives at that step."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "logprob": self.logprob, "top": [list(t) for t in self.top]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TokenLogprob":
        return cls(str(d["token"]), float(d["logprob"]), tuple((str(t), float(lp)) for t, lp in d.get("top", ())))


@dataclass(frozen=True)
class VLMRequest:
    """One question about one image. The image is read (and downscaled) by the backend, lazily,
    so a long run never holds every image in memory."""

    img_id: str
    image_path: str
    prompt: str
    system: str = ""
    json_schema: dict[str, Any] | None = None   # ask for JSON of this schema where the backend can


@dataclass
class VLMAnswer:
    """The backend's answer to one request: text (+ token log-probabilities) or an error."""

    img_id: str
    text: str | None = None
    tokens: list[TokenLogprob] | None = None
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


class GenerativeBackend(Protocol):
    """``answer_all`` calls ``on_answer`` once per request, in any order, from any thread; a
    request that fails after its retries yields an answer with ``error`` set (never an exception),
    so one bad request never stops a run."""

    def answer_all(self, requests: Iterable[VLMRequest], on_answer: Callable[[VLMAnswer], None]) -> None: ...

    def identity(self) -> dict[str, Any]: ...


def load_request_image(path: str, max_side: int | None):
    """The image as RGB (via ``open_rgb``), downscaled so its longer side is at most ``max_side``."""
    from PIL import Image

    from ...data.images import open_rgb

    image = open_rgb(path)
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def encode_image(image, image_format: str = "jpeg", quality: int = 95) -> tuple[bytes, str]:
    """Encoded bytes and MIME type of a PIL image (JPEG at ``quality``, or lossless PNG)."""
    buf = io.BytesIO()
    if image_format == "png":
        image.save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    image.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue(), "image/jpeg"
