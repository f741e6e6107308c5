"""Generative VLMs behind a server: Ollama's native API and any OpenAI-compatible server.

Two frameworks in one module (``ollama`` and ``openai``): they share everything but the payload.

Both clients share :class:`HttpVLMBackend`: a thread pool of ``concurrency`` workers over one
``httpx.Client`` (connection pooling), and :func:`post_with_retries`, which retries connection
errors, timeouts, HTTP 429 and 5xx with exponential backoff (a ``Retry-After`` header wins) and
fails fast on other 4xx. A request that still fails becomes an answer with ``error`` set - counted
and scored as wrong by the cell, never an exception that stops the run. ``httpx`` is imported here
only (the ``[vlm]`` extra).

Limits, so that a misbehaving server cannot stall or flood a run:

* ``timeout_s`` (``--timeout``) bounds each attempt **as a whole** — connecting, sending, waiting and
  reading the reply — not each read: a server that trickles a byte every half second times out at
  ``timeout_s`` like one that says nothing (a deadline checked by every socket read and write);
* a reply larger than :data:`MAX_RESPONSE_BYTES` is not read further: a failed request (an answer
  of ``max_new_tokens`` tokens is a few kilobytes), not retried;
* each image is read, resized and encoded once per run (:meth:`HttpVLMBackend.encoded_image`), and
  each request's JSON body is serialised once for all its attempts.

The study sent one request at a time; ``benchmarks/vlm_server.py`` measures what concurrency buys.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

from ...data.images import ImageReadError
from ...errors import RequestFailed, ServerUnreachable
from ..spec import ModelSpec
from ..vlm.base import TokenLogprob, VLMAnswer, VLMRequest, encode_image, load_request_image

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_OPENAI_URL = "http://127.0.0.1:8000/v1"
RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_BACKOFF_S = 60.0
#: Largest reply read from a server. A generative answer of ``max_new_tokens`` tokens, with log-probabilities,
#: is a few kilobytes; a reply beyond this is a failed request and is not read to its end.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: Encoded images kept per backend (an image asked about again, or retried, is not encoded again).
ENCODED_IMAGES_KEPT = 256


def _httpx():
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("server-backed VLMs need httpx: pip install 'dermbench[vlm]'") from exc
    return httpx


# -- the whole-request deadline ---------------------------------------------------------------------
_DEADLINE = threading.local()  # .at: time.monotonic() by which this thread's current request must be done


@contextlib.contextmanager
def request_deadline(timeout_s: float | None) -> Iterator[None]:
    """Every socket operation of a request sent by this thread inside the block must finish by
    ``timeout_s`` from now (see :class:`_DeadlineBackend`); None: no deadline."""
    before = getattr(_DEADLINE, "at", None)
    _DEADLINE.at = None if timeout_s is None else time.monotonic() + float(timeout_s)
    try:
        yield
    finally:
        _DEADLINE.at = before


def _time_left(kind: str) -> float | None:
    """Seconds left before this thread's deadline (None: no deadline); a timeout of ``kind`` when none."""
    deadline = getattr(_DEADLINE, "at", None)
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        import httpcore

        raise {"read": httpcore.ReadTimeout, "write": httpcore.WriteTimeout,
               "connect": httpcore.ConnectTimeout}[kind]("the request's deadline (timeout_s) passed")
    return left


def _bounded(timeout: float | None, kind: str) -> float | None:
    left = _time_left(kind)
    if left is None:
        return timeout
    return left if timeout is None else min(timeout, left)


def _deadline_backend():
    """httpcore's network backend with every connect, read and write bounded by the deadline left
    (httpx's own timeouts apply per read: a trickling server never trips them)."""
    import httpcore

    class DeadlineStream(httpcore.NetworkStream):
        def __init__(self, inner: Any):
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, _bounded(timeout, "read"))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, _bounded(timeout, "write"))

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                      timeout: float | None = None) -> Any:
            return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout, "connect")))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class DeadlineBackend(httpcore.SyncBackend):
        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Any = None) -> Any:
            return DeadlineStream(super().connect_tcp(host, port, _bounded(timeout, "connect"), local_address,
                                                      socket_options))

        def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
            return DeadlineStream(super().connect_unix_socket(path, _bounded(timeout, "connect"), socket_options))

    return DeadlineBackend()


def deadline_transport(limits: Any) -> Any:
    """An ``httpx.HTTPTransport`` whose connections obey :func:`request_deadline`."""
    import httpcore

    httpx = _httpx()
    transport = httpx.HTTPTransport(limits=limits)
    if isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):  # httpx's direct-connection pool
        transport._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=_deadline_backend())
    return transport


def _post_once(httpx: Any, client: Any, url: str, body: bytes, headers: dict[str, str],
               attempt: int) -> tuple[int, bytes, Any]:
    """One POST: (status, reply bytes, reply headers); the reply is read up to :data:`MAX_RESPONSE_BYTES`."""
    with client.stream("POST", url, content=body, headers=headers) as response:
        too_large = RequestFailed(f"the server's reply is larger than {MAX_RESPONSE_BYTES:,} bytes (an answer of "
                                  f"max_new_tokens tokens is a few kilobytes); not read further", attempt)
        # the raw header list: httpx's Headers decodes every header on each lookup
        declared = next((v for k, v in response.headers.raw if k.lower() == b"content-length"), b"")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise too_large
        parts, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise too_large
            parts.append(chunk)
            deadline = getattr(_DEADLINE, "at", None)  # also with a transport of the caller's (tests, proxies)
            if deadline is not None and time.monotonic() > deadline:
                raise httpx.ReadTimeout("the request's deadline (timeout_s) passed")
        return response.status_code, b"".join(parts), response.headers


def post_with_retries(client: Any, url: str, payload: dict[str, Any] | bytes, *,
                      headers: dict[str, str] | None = None, max_retries: int = 3, backoff_s: float = 1.0,
                      timeout_s: float | None = None, sleep: Callable[[float], None] = time.sleep,
                      json_header: bool = True) -> tuple[dict[str, Any], int]:
    """POST JSON; return (response JSON, attempts). Retries transient failures, raises RequestFailed.

    ``payload`` is serialised once for all attempts. ``timeout_s`` bounds each attempt as a whole
    (with a client from :meth:`HttpVLMBackend.make_client`). ``json_header=False``: the client sends
    ``Content-Type: application/json`` itself (its default headers; cheaper than per request)."""
    httpx = _httpx()
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **(headers or {})} if json_header else headers
    attempt = 0
    while True:
        attempt += 1
        retry_after: float | None = None
        try:
            with request_deadline(timeout_s):
                status, data, reply_headers = _post_once(httpx, client, url, body, headers, attempt)
        except httpx.TimeoutException as exc:
            limit = f" within {timeout_s:g} s (--timeout bounds the whole request)" if timeout_s else ""
            problem = f"timed out: no complete reply{limit} ({type(exc).__name__})"
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:  # our URL/request: no retry helps
            raise RequestFailed(f"bad request to {url} ({type(exc).__name__}: {exc})", attempt) from None
        except httpx.TransportError as exc:
            problem = f"connection error ({type(exc).__name__}: {exc})"
        except (httpx.RequestError, httpx.InvalidURL) as exc:  # redirect loop, undecodable body: not transient
            raise RequestFailed(f"request failed ({type(exc).__name__}: {exc})", attempt) from None
        else:
            if status < 400:
                try:
                    return json.loads(data), attempt
                except ValueError:
                    raise RequestFailed(f"malformed response: HTTP {status} body is not JSON "
                                        f"({data[:200].decode('utf-8', 'replace')!r})", attempt) from None
            text = data[:300].decode("utf-8", "replace").replace("\n", " ")
            problem = f"HTTP {status}: {text}"
            if status not in RETRY_STATUS:
                raise RequestFailed(problem, attempt)
            retry_after = _retry_after(reply_headers.get("retry-after"))
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
        self._encoded: OrderedDict[tuple, Future] = OrderedDict()
        self._encoding_lock = threading.Lock()

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
        transport = self._transport if self._transport is not None else deadline_transport(limits)
        return httpx.Client(timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0)),
                            limits=limits, transport=transport,
                            headers={"Content-Type": "application/json", **self.headers()})

    def encoded_image(self, path: str) -> tuple[str, str]:
        """(base64 text, MIME type) of the image as sent: read, downscaled and encoded once per run
        (the last :data:`ENCODED_IMAGES_KEPT` are kept; a second request for an image being encoded
        waits for that encoding instead of doing it again)."""
        key = (str(path), self.max_image_side, self.image_format, self.jpeg_quality)
        with self._encoding_lock:
            entry = self._encoded.get(key)
            owner = entry is None
            if owner:
                entry = self._encoded[key] = Future()
            else:
                self._encoded.move_to_end(key)
        if owner:
            try:
                image = load_request_image(str(path), self.max_image_side)
                data, mime = encode_image(image, self.image_format, self.jpeg_quality)
                entry.set_result((base64.b64encode(data).decode("ascii"), mime))
            except BaseException as exc:
                entry.set_exception(exc)
                with self._encoding_lock:
                    self._encoded.pop(key, None)
            with self._encoding_lock:
                while len(self._encoded) > ENCODED_IMAGES_KEPT:
                    self._encoded.popitem(last=False)
        return entry.result()

    def answer_one(self, client: Any, request: VLMRequest) -> VLMAnswer:
        t0 = time.perf_counter()
        try:
            image_b64, mime = self.encoded_image(request.image_path)
            body = json.dumps(self.payload(request, image_b64, mime)).encode()
            reply, attempts = post_with_retries(client, f"{self.url}{self.endpoint}", body,
                                                max_retries=self.max_retries, backoff_s=self.backoff_s,
                                                timeout_s=self.timeout_s, json_header=False)
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
