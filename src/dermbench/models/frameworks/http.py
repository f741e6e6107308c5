"""Generative VLMs behind a server: Ollama's native API and any OpenAI-compatible server.

Two frameworks in one module (``ollama`` and ``openai``): they share everything but the payload.

Both clients share :class:`HttpVLMBackend`: a thread pool of ``concurrency`` workers over one
``httpx.Client`` (connection pooling, a per-request timeout), and :func:`post_with_retries`,
which retries connection errors, timeouts, HTTP 429 and 5xx with exponential backoff (a
``Retry-After`` header wins) and fails fast on other 4xx. A request that still fails becomes an
answer with ``error`` set - counted and scored as wrong by the cell, never an exception that
stops the run. ``httpx`` is imported here only (the ``[vlm]`` extra).

The study sent one request at a time; ``benchmarks/vlm_server.py`` measures what concurrency buys.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

from ...data.images import ImageReadError
from ...errors import ServerUnreachable
from ..spec import ModelSpec
from ..vlm.base import TokenLogprob, VLMAnswer, VLMRequest, encode_image, load_request_image

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_OPENAI_URL = "http://127.0.0.1:8000/v1"
RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_BACKOFF_S = 60.0


class RequestFailed(Exception):
    """A request that failed for good (after retries, or a non-retryable status)."""

    def __init__(self, message: str, attempts: int):
        super().__init__(message)
        self.attempts = attempts


def _httpx():
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("server-backed VLMs need httpx: pip install 'dermbench[vlm]'") from exc
    return httpx


def post_with_retries(client: Any, url: str, payload: dict[str, Any], *, headers: dict[str, str] | None = None,
                      max_retries: int = 3, backoff_s: float = 1.0,
                      sleep: Callable[[float], None] = time.sleep) -> tuple[dict[str, Any], int]:
    """POST JSON; return (response JSON, attempts). Retries transient failures, raises RequestFailed."""
    httpx = _httpx()
    attempt = 0
    while True:
        attempt += 1
        retry_after: float | None = None
        try:
            response = client.post(url, json=payload, headers=headers)
        except httpx.TimeoutException as exc:
            problem = f"timed out ({type(exc).__name__})"
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:  # our URL/request: no retry helps
            raise RequestFailed(f"bad request to {url} ({type(exc).__name__}: {exc})", attempt) from None
        except httpx.TransportError as exc:
            problem = f"connection error ({type(exc).__name__}: {exc})"
        except (httpx.RequestError, httpx.InvalidURL) as exc:  # redirect loop, undecodable body: not transient
            raise RequestFailed(f"request failed ({type(exc).__name__}: {exc})", attempt) from None
        else:
            if response.status_code < 400:
                try:
                    return response.json(), attempt
                except ValueError:
                    raise RequestFailed(f"malformed response: HTTP {response.status_code} body is not JSON "
                                        f"({response.text[:200]!r})", attempt) from None
            body = response.text[:300].replace("\n", " ")
            problem = f"HTTP {response.status_code}: {body}"
            if response.status_code not in RETRY_STATUS:
                raise RequestFailed(problem, attempt)
            retry_after = _retry_after(response.headers.get("retry-after"))
        if attempt > max_retries:
            raise RequestFailed(f"{problem} (gave up after {attempt} attempts)", attempt)
        delay = retry_after if retry_after is not None else backoff_s * (2 ** (attempt - 1))
        delay = min(delay, MAX_BACKOFF_S)
        sleep(delay * (1.0 + 0.1 * random.random()) if retry_after is None else delay)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class HttpVLMBackend(ABC):
    """Common machinery of the server clients; subclasses build the payload and read the reply."""

    backend = "http"
    default_url = ""
    url_env = ""

    def __init__(self, model: str, *, url: str | None = None, api_key: str | None = None, seed: int = 42,
                 temperature: float = 0.0, max_new_tokens: int = 256, logprobs: bool = True, top_logprobs: int = 5,
                 json_output: bool = True, concurrency: int = 4, timeout_s: float = 120.0, max_retries: int = 3,
                 backoff_s: float = 1.0, max_image_side: int | None = 1024, image_format: str = "jpeg",
                 jpeg_quality: int = 95, transport: Any = None):
        self.model = model
        self.url = (url or os.environ.get(self.url_env) or self.default_url).rstrip("/")
        if "://" not in self.url:  # OLLAMA_HOST is often written as host:port
            self.url = "http://" + self.url
        self.api_key = api_key
        self.seed = int(seed)
        self.temperature = float(temperature)
        self.max_new_tokens = int(max_new_tokens)
        self.logprobs = bool(logprobs)
        self.top_logprobs = int(top_logprobs)
        self.json_output = bool(json_output)
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_image_side = max_image_side
        self.image_format = image_format
        self.jpeg_quality = int(jpeg_quality)
        self._transport = transport

    # -- what a server flavour defines ---------------------------------------------------------
    endpoint = ""

    @abstractmethod
    def payload(self, request: VLMRequest, image_b64: str, mime: str) -> dict[str, Any]:
        """The JSON body of one request."""

    @abstractmethod
    def read_reply(self, reply: dict[str, Any]) -> tuple[str, list[TokenLogprob] | None]:
        """Answer text and token log-probabilities (None when absent) of a reply; raise on a bad shape."""

    # -- shared ------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "url": self.url, "concurrency": self.concurrency,
                "timeout_s": self.timeout_s, "max_retries": self.max_retries}

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def make_client(self):
        httpx = _httpx()
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return httpx.Client(timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0)),
                            limits=limits, transport=self._transport)

    def answer_one(self, client: Any, request: VLMRequest) -> VLMAnswer:
        t0 = time.perf_counter()
        try:
            image = load_request_image(request.image_path, self.max_image_side)
            data, mime = encode_image(image, self.image_format, self.jpeg_quality)
            payload = self.payload(request, base64.b64encode(data).decode("ascii"), mime)
            reply, attempts = post_with_retries(client, f"{self.url}{self.endpoint}", payload,
                                                headers=self.headers(), max_retries=self.max_retries,
                                                backoff_s=self.backoff_s)
            try:
                text, tokens = self.read_reply(reply)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise RequestFailed(f"malformed response: {type(exc).__name__} {exc} in "
                                    f"{json.dumps(reply)[:200]}", attempts) from None
            return VLMAnswer(request.img_id, text=text, tokens=tokens, attempts=attempts,
                             seconds=time.perf_counter() - t0)
        except RequestFailed as exc:
            return VLMAnswer(request.img_id, error=str(exc), attempts=exc.attempts, seconds=time.perf_counter() - t0)
        except (OSError, ImageReadError) as exc:  # reading the image (it was checked when the dataset loaded)
            return VLMAnswer(request.img_id, error=f"{type(exc).__name__}: {exc}", attempts=0,
                             seconds=time.perf_counter() - t0)

    def check_reachable(self, client: Any, sleep: Callable[[float], None] = time.sleep) -> None:
        """Fail fast when nothing listens at the URL (connection refused, unknown host).

        Without this, every image would be retried with backoff and scored as a failed request,
        which takes minutes to say "the server is not running". Any HTTP answer, even 404, means
        a server is there; timeouts are left to the per-request handling."""
        httpx = _httpx()
        for attempt in range(self.max_retries + 1):
            try:
                client.get(self.url + "/", timeout=min(self.timeout_s, 10.0))
                return
            except httpx.ConnectError as exc:
                problem = exc
            except (httpx.TimeoutException, httpx.HTTPError):
                return
            if attempt < self.max_retries:
                sleep(min(self.backoff_s * (2 ** attempt), MAX_BACKOFF_S))
        raise ServerUnreachable(
            f"cannot connect to the {self.backend} server at {self.url} ({type(problem).__name__}: {problem}); "
            f"start it (e.g. `ollama serve`, `vllm serve MODEL`) or pass its address with --url "
            f"(or ${self.url_env})")

    def answer_all(self, requests: Iterable[VLMRequest], on_answer: Callable[[VLMAnswer], None]) -> None:
        """Answer every request with at most ``concurrency`` in flight; ``on_answer`` is serialised.

        On Ctrl-C (or a bug in ``on_answer``) the queued requests are cancelled at once instead of
        being sent first; answers already received have been handed to ``on_answer`` (and cached)."""
        lock = threading.Lock()
        with self.make_client() as client:
            self.check_reachable(client)
            pool = ThreadPoolExecutor(max_workers=self.concurrency)

            def work(request: VLMRequest) -> None:
                answer = self.answer_one(client, request)
                with lock:
                    on_answer(answer)

            try:
                futures = [pool.submit(work, r) for r in requests]
                for future in futures:
                    future.result()  # re-raises a bug in on_answer instead of hiding it
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()


class OllamaBackend(HttpVLMBackend):
    """Ollama's native API: base64 images, deterministic options.

    ``api="chat"`` (the default): ``/api/chat`` with a system message, ``format`` = the JSON schema,
    ``seed`` and ``num_predict``. ``api="generate"``: ``/api/generate`` as the study sent it
    (STUDY.md §6.4): one ``prompt``, the user prompt alone or, when there is a system prompt,
    ``"[SYSTEM PROMPT]\n{system}\n\n[USER PROMPT]\n{user}"``; ``options`` = ``{temperature}`` only
    (the study sent no seed and no token limit); the answer is the ``response`` text, stripped as
    the study stripped it. Log-probabilities are still requested when ``logprobs`` is on (they
    do not change a greedy answer)."""

    backend = "ollama"
    default_url = DEFAULT_OLLAMA_URL
    url_env = "OLLAMA_HOST"
    APIS = ("chat", "generate")

    def __init__(self, model: str, *, api: str = "chat", **kw: Any):
        if api not in self.APIS:
            raise ValueError(f"Ollama api must be one of {self.APIS}, got {api!r}")
        self.api = api
        super().__init__(model, **kw)

    @property
    def endpoint(self) -> str:  # type: ignore[override]
        return f"/api/{self.api}"

    def identity(self) -> dict[str, Any]:
        out = super().identity()
        if self.api != "chat":
            out["api"] = self.api
        return out

    def payload(self, request: VLMRequest, image_b64: str, mime: str) -> dict[str, Any]:
        if self.api == "generate":
            return self._generate_payload(request, image_b64)
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt, "images": [image_b64]})
        body: dict[str, Any] = {
            "model": self.model, "messages": messages, "stream": False,
            "options": {"temperature": self.temperature, "seed": self.seed, "num_predict": self.max_new_tokens},
        }
        if self.json_output and request.json_schema:
            body["format"] = request.json_schema
        if self.logprobs:  # Ollama >= 0.12 returns them; older servers ignore the fields
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        return body

    def _generate_payload(self, request: VLMRequest, image_b64: str) -> dict[str, Any]:
        prompt = request.prompt
        if request.system:
            prompt = f"[SYSTEM PROMPT]\n{request.system}\n\n[USER PROMPT]\n{request.prompt}"
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "images": [image_b64], "stream": False,
                                "options": {"temperature": self.temperature}}
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        return body

    def read_reply(self, reply: dict[str, Any]) -> tuple[str, list[TokenLogprob] | None]:
        if self.api == "generate":
            if "error" in reply and "response" not in reply:
                raise ValueError(f"server error {reply['error']!r}")
            text = reply["response"]
            if not isinstance(text, str):
                raise TypeError("response is not a string")
            tokens = _read_logprobs(reply.get("logprobs"))
            # the study stripped the answer; keep the tokens only when they still spell it
            return text.strip(), tokens if tokens is None or text == text.strip() else None
        if "error" in reply and "message" not in reply:
            raise ValueError(f"server error {reply['error']!r}")
        text = reply["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("message.content is not a string")
        return text, _read_logprobs(reply.get("logprobs"))


class OpenAIBackend(HttpVLMBackend):
    """``/v1/chat/completions``: image data URLs, ``response_format`` JSON schema, ``logprobs``."""

    backend = "openai"
    default_url = DEFAULT_OPENAI_URL
    url_env = "OPENAI_BASE_URL"
    endpoint = "/chat/completions"

    def __init__(self, model: str, **kw: Any):
        kw.setdefault("api_key", os.environ.get("OPENAI_API_KEY"))
        super().__init__(model, **kw)

    def payload(self, request: VLMRequest, image_b64: str, mime: str) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{image_b64}"}},
            {"type": "text", "text": request.prompt},
        ]})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                "seed": self.seed, "max_tokens": self.max_new_tokens}
        if self.json_output and request.json_schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "lesion_answer", "schema": request.json_schema, "strict": True}}
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        return body

    def read_reply(self, reply: dict[str, Any]) -> tuple[str, list[TokenLogprob] | None]:
        choice = reply["choices"][0]
        text = choice["message"].get("content")
        if text is None:
            text = ""  # e.g. a refusal field instead of content: an empty answer, counted as unparsed
        if not isinstance(text, str):
            raise TypeError("message.content is not a string")
        logprobs = choice.get("logprobs") or {}
        return text, _read_logprobs(logprobs.get("content") if isinstance(logprobs, dict) else None)


def _read_logprobs(items: Any) -> list[TokenLogprob] | None:
    """OpenAI/Ollama ``[{token, logprob, top_logprobs: [{token, logprob}]}]`` -> TokenLogprob list."""
    if not items or not isinstance(items, list):
        return None
    out = []
    for item in items:
        if not isinstance(item, dict) or "token" not in item or item.get("logprob") is None:
            return None
        top = tuple((str(t["token"]), float(t["logprob"])) for t in item.get("top_logprobs") or []
                    if isinstance(t, dict) and "token" in t and t.get("logprob") is not None)
        out.append(TokenLogprob(str(item["token"]), float(item["logprob"]), top))
    return out


def _common_kwargs(settings: Any, seed: int) -> dict[str, Any]:
    return dict(url=settings.url, seed=seed, temperature=settings.temperature,
                max_new_tokens=settings.max_new_tokens, logprobs=settings.logprobs,
                top_logprobs=settings.top_logprobs, json_output=settings.answer_format == "json",
                concurrency=settings.concurrency, timeout_s=settings.timeout_s, max_retries=settings.max_retries,
                backoff_s=settings.backoff_s, max_image_side=settings.max_image_side,
                image_format=settings.image_format, jpeg_quality=getattr(settings, "jpeg_quality", 95))


#: ``spec.framework`` -> the client class
BACKENDS: dict[str, type[HttpVLMBackend]] = {"ollama": OllamaBackend, "openai": OpenAIBackend}


def build_generative(spec: ModelSpec, settings: Any, *, weights: str, device: str, seed: int = 42) -> HttpVLMBackend:
    """A client of the server that runs ``spec.model_id`` (the device is the server's, not ours)."""
    if weights != "default":
        raise ValueError(f"{spec.name} runs on a server, which decides its weights; weights={weights!r} cannot "
                         f"apply (pull or serve the model you want and name it: {spec.framework}:<model>)")
    kwargs = _common_kwargs(settings, seed)
    if spec.framework == "ollama":
        kwargs["api"] = getattr(settings, "ollama_api", "chat")
    return BACKENDS[spec.framework](spec.model_id, **kwargs)
