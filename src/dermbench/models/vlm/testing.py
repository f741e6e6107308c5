"""A local stand-in VLM server for tests and benchmarks (stdlib only, no model, no network).

:class:`FakeVLMServer` listens on ``127.0.0.1`` on a free port in a background thread and speaks
``POST /api/chat`` and ``POST /api/generate`` (Ollama) and ``POST /v1/chat/completions``
(OpenAI-compatible). What it
answers is chosen by the **model name** of a request, so one server exercises every failure the
clients must handle:

============  =================================================================================
model         behaviour
============  =================================================================================
(any other)   answers ``answer(image_b64, prompt)`` after ``delay_s`` (default: JSON, label from
              the image's mean red-minus-blue; with token log-probabilities when asked)
``slow``      sleeps ``slow_s`` before answering (longer than a test client's timeout)
``error500``  always HTTP 500
``flaky429``  HTTP 429 (``Retry-After: 0``) the first time an image is asked, then answers
``flaky500``  HTTP 503 the first time an image is asked, then answers
``malformed`` HTTP 200 whose body is not JSON
``noanswer``  HTTP 200 JSON without the message / choices fields
``garbage``   answers text that names no label ("I am not sure what this is.")
``refuse``    answers a refusal
``empty``     answers an empty message (what MedGemma gives in float16)
============  =================================================================================

``requests`` records every request body; ``max_in_flight`` the most requests handled at once.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def default_answer(image_b64: str, prompt: str) -> tuple[str, float]:
    """(label, p_malignant) from the image: redder-than-blue images are called malignant."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(image_b64))).convert("RGB")
    arr = np.asarray(image, dtype=np.float64)
    score = float(arr[..., 0].mean() - arr[..., 2].mean()) / 255.0
    p = 1.0 / (1.0 + math.exp(-8.0 * score))
    return ("malignant" if p >= 0.5 else "benign"), p


class _ListeningServer(ThreadingHTTPServer):
    """http.server's accept queue is 5 connections: 16 clients connecting at once then lose SYNs and
    retry a second later, which no real model server does (and which a benchmark would blame on
    the client)."""

    request_queue_size = 128


class FakeVLMServer:
    def __init__(self, answer: Callable[[str, str], tuple[str, float]] = default_answer, *, delay_s: float = 0.0,
                 slow_s: float = 2.0):
        self.answer = answer
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.requests: list[dict[str, Any]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._server = _ListeningServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeVLMServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- request handling ----------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed ACKs

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "body": body})
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    status, headers, payload = server.respond(self.path, body)
                finally:
                    with server._lock:
                        server._in_flight -= 1
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        return Handler

    def respond(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        openai = path.rstrip("/").endswith("/chat/completions")
        generate = path.rstrip("/") == "/api/generate"
        if not openai and not generate and path.rstrip("/") != "/api/chat":
            return 404, {}, {"error": f"no route {path}"}
        model = str(body.get("model", ""))
        if generate:
            image_b64, prompt = (body.get("images") or [""])[0], str(body.get("prompt", ""))
        else:
            image_b64, prompt = _image_and_prompt(body, openai)
        key = path + model + hashlib.sha256(image_b64.encode()).hexdigest()
        if model == "slow":
            time.sleep(self.slow_s)
        elif self.delay_s:
            time.sleep(self.delay_s)
        if model == "error500":
            return 500, {}, {"error": "internal error"}
        if model in ("flaky429", "flaky500"):
            with self._lock:
                first = key not in self._seen
                self._seen.add(key)
            if first:
                return (429, {"Retry-After": "0"}, {"error": "rate limited"}) if model == "flaky429" \
                    else (503, {}, {"error": "busy"})
        if model == "malformed":
            return 200, {}, b"<html>proxy error</html>"
        if model == "noanswer":
            return 200, {}, {"id": "x", "object": "chat.completion"} if openai else {"done": True}
        wants_json = ("format" in body) or ("response_format" in body)
        if model == "garbage":
            text, tokens = "I am not sure what this is.", None
        elif model == "empty":
            text, tokens = "", None
        elif model == "refuse":
            text, tokens = "I'm sorry, but I can't provide a medical diagnosis. Please consult a dermatologist.", None
        else:
            label, p = self.answer(image_b64, prompt)
            text, tokens = _answer_text(label, p, wants_json)
        if not body.get("logprobs"):
            tokens = None
        if openai:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}
            if tokens is not None:
                choice["logprobs"] = {"content": tokens}
            return 200, {}, {"id": "cmpl-fake", "object": "chat.completion", "model": model, "choices": [choice]}
        if generate:
            reply: dict[str, Any] = {"model": model, "response": text, "done": True}
            if tokens is not None:
                reply["logprobs"] = tokens
            return 200, {}, reply
        reply = {"model": model, "message": {"role": "assistant", "content": text}, "done": True}
        if tokens is not None:
            reply["logprobs"] = tokens
        return 200, {}, reply


def _image_and_prompt(body: dict[str, Any], openai: bool) -> tuple[str, str]:
    messages = body.get("messages") or []
    user = messages[-1] if messages else {}
    if not openai:
        images = user.get("images") or [""]
        return images[0], str(user.get("content", ""))
    image, prompt = "", ""
    for part in user.get("content") or []:
        if part.get("type") == "image_url":
            image = part["image_url"]["url"].split(",", 1)[-1]
        elif part.get("type") == "text":
            prompt = part.get("text", "")
    return image, prompt


def _answer_text(label: str, p_malignant: float, wants_json: bool) -> tuple[str, list[dict[str, Any]]]:
    """Answer text and OpenAI-style token log-probabilities whose concatenation is the text."""
    p = min(max(p_malignant, 1e-6), 1 - 1e-6)
    confidence = p if label == "malignant" else 1 - p
    label_tok, rest_tok = ("mal", "ignant") if label == "malignant" else ("ben", "ign")
    top = [{"token": "mal", "logprob": math.log(p)}, {"token": "ben", "logprob": math.log(1 - p)}]
    chosen_lp = math.log(p) if label == "malignant" else math.log(1 - p)
    if wants_json:
        parts = ['{"label": "', label_tok, rest_tok, f'", "confidence": {confidence:.2f}}}']
    else:
        parts = [label_tok, rest_tok]
    tokens = []
    for part in parts:
        if part == label_tok:
            tokens.append({"token": part, "logprob": chosen_lp, "top_logprobs": top})
        else:
            tokens.append({"token": part, "logprob": -0.001, "top_logprobs": [{"token": part, "logprob": -0.001}]})
    return "".join(parts), tokens
