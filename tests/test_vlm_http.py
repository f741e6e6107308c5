"""Ollama and OpenAI-compatible clients against a local fake server (no network)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from dermbench.models.vlm.base import VLMRequest  # noqa: E402
from dermbench.models.frameworks.http import OllamaBackend, OpenAIBackend, RequestFailed, post_with_retries  # noqa: E402
from dermbench.models.vlm.testing import FakeVLMServer  # noqa: E402
from dermbench.paradigms.zeroshot.parsing import score_answer  # noqa: E402
from dermbench.paradigms.zeroshot.prompts import load_prompt_set  # noqa: E402

BACKENDS = {"ollama": OllamaBackend, "openai": OpenAIBackend}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    paths = {}
    for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200)), ("red2", (180, 60, 50))):
        path = folder / f"{name}.jpg"
        Image.new("RGB", (48, 40), colour).save(path)
        paths[name] = str(path)
    return paths


@pytest.fixture(scope="module")
def server():
    with FakeVLMServer(slow_s=1.0) as srv:
        yield srv


def _backend(kind, server, model, **kw):
    url = server.url + ("/v1" if kind == "openai" else "")
    opts = dict(url=url, timeout_s=0.3, max_retries=1, backoff_s=0.01, concurrency=2)
    opts.update(kw)
    return BACKENDS[kind](model, **opts)


def _ask(backend, images, names=("red", "blue")):
    schema = load_prompt_set("simple").json_schema()
    requests = [VLMRequest(n, images[n], "Is it benign or malignant?", "You are a dermatologist.", schema)
                for n in names]
    answers = {}
    backend.answer_all(requests, lambda a: answers.__setitem__(a.img_id, a))
    return answers


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_answers_with_json_and_logprobs(kind, server, images):
    answers = _ask(_backend(kind, server, "good"), images)
    assert set(answers) == {"red", "blue"}
    for name, truth in (("red", 1), ("blue", 0)):
        a = answers[name]
        assert not a.failed and a.attempts == 1
        s = score_answer(a.text, truth, tokens=a.tokens)
        assert s.label == truth
        assert s.score_source == "logprobs"
        assert 0 < s.p_malignant < 1 and (s.p_malignant > 0.5) == bool(truth)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_request_payload_follows_the_api(kind, server, images):
    before = len(server.requests)
    _ask(_backend(kind, server, "good", seed=7, max_new_tokens=33), images, names=("red",))
    body = server.requests[before]["body"]
    if kind == "ollama":
        assert server.requests[before]["path"] == "/api/chat"
        assert body["stream"] is False
        assert body["options"] == {"temperature": 0.0, "seed": 7, "num_predict": 33}
        assert body["format"]["properties"]["label"]["enum"] == ["benign", "malignant"]
        user = body["messages"][-1]
        assert user["images"] and not user["images"][0].startswith("data:")
        assert body["messages"][0]["role"] == "system"
    else:
        assert server.requests[before]["path"] == "/v1/chat/completions"
        assert body["temperature"] == 0.0 and body["seed"] == 7 and body["max_tokens"] == 33
        assert body["response_format"]["type"] == "json_schema"
        assert body["logprobs"] is True and body["top_logprobs"] == 5
        parts = body["messages"][-1]["content"]
        assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_confidence_is_used_without_logprobs(kind, server, images):
    answers = _ask(_backend(kind, server, "good", logprobs=False), images, names=("red",))
    a = answers["red"]
    assert a.tokens is None
    s = score_answer(a.text, 1, tokens=a.tokens)
    assert s.score_source == "confidence" and s.p_malignant > 0.5


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_slow_server_times_out_and_fails(kind, server, images):
    answers = _ask(_backend(kind, server, "slow", timeout_s=0.2, max_retries=1), images, names=("red",))
    a = answers["red"]
    assert a.failed and "timed out" in a.error and a.attempts == 2


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_500_is_retried_then_fails(kind, server, images):
    answers = _ask(_backend(kind, server, "error500", max_retries=2), images, names=("red",))
    a = answers["red"]
    assert a.failed and "HTTP 500" in a.error and a.attempts == 3


@pytest.mark.parametrize("kind,model", [("ollama", "flaky429"), ("openai", "flaky429"), ("openai", "flaky500")])
def test_429_and_503_are_retried_then_succeed(kind, model, server, images):
    answers = _ask(_backend(kind, server, model, max_retries=2), images)
    for a in answers.values():
        assert not a.failed, a.error
        assert a.attempts == 2


@pytest.mark.parametrize("kind", ["ollama", "openai"])
@pytest.mark.parametrize("model", ["malformed", "noanswer"])
def test_malformed_response_is_a_failed_request(kind, model, server, images):
    a = _ask(_backend(kind, server, model), images, names=("red",))["red"]
    assert a.failed and "malformed response" in a.error
    assert a.attempts == 1  # a 200 is not retried


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_unparseable_content_is_an_answer_scored_wrong(kind, server, images):
    for model, status in (("garbage", "no_label"), ("refuse", "refusal")):
        a = _ask(_backend(kind, server, model), images, names=("red",))["red"]
        assert not a.failed
        s = score_answer(a.text, 1, tokens=a.tokens)
        assert s.parse_status == status and s.p_malignant == 0.0 and s.score_source == "scored_wrong"


def test_connection_refused_stops_the_run_at_once_with_a_clear_error(images):
    import socket
    import time

    from dermbench.errors import ServerUnreachable

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    backend = OllamaBackend("m", url=f"http://127.0.0.1:{port}", timeout_s=0.3, max_retries=2, backoff_s=0.01)
    t0 = time.perf_counter()
    with pytest.raises(ServerUnreachable, match=f"cannot connect to the ollama server at http://127.0.0.1:{port}"):
        _ask(backend, images, names=("red", "blue"))
    assert time.perf_counter() - t0 < 5


def test_a_connection_error_during_the_run_is_retried_then_a_failed_request(images):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    backend = OllamaBackend("m", url=f"http://127.0.0.1:{port}", timeout_s=0.3, max_retries=2, backoff_s=0.01)
    import httpx

    with httpx.Client(timeout=0.3) as client:
        a = backend.answer_one(client, VLMRequest("red", images["red"], "Benign or malignant?", "", None))
    assert a.failed and "connection error" in a.error and a.attempts == 3


def test_concurrency_is_bounded(images):
    with FakeVLMServer(delay_s=0.1) as srv:
        backend = OllamaBackend("good", url=srv.url, concurrency=2, timeout_s=2)
        answers = _ask(backend, images, names=("red", "blue", "red2") * 1)
        assert len(answers) == 3
        assert srv.max_in_flight <= 2


def test_backoff_doubles_and_honours_retry_after():
    import httpx

    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(503)
        if len(calls) == 2:
            return httpx.Response(429, headers={"Retry-After": "0.5"})
        return httpx.Response(200, json={"ok": True})

    slept = []
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        reply, attempts = post_with_retries(client, "http://x/api", {}, max_retries=3, backoff_s=0.1,
                                            sleep=slept.append)
    assert reply == {"ok": True} and attempts == 3
    assert 0.1 <= slept[0] <= 0.11 and slept[1] == 0.5

    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(400, text="bad model"))) as client:
        with pytest.raises(RequestFailed, match="HTTP 400: bad model") as info:
            post_with_retries(client, "http://x/api", {}, max_retries=3, sleep=slept.append)
    assert info.value.attempts == 1


@pytest.mark.parametrize("error,retried", [("TooManyRedirects", False), ("DecodingError", False),
                                           ("UnsupportedProtocol", False), ("ConnectError", True),
                                           ("RemoteProtocolError", True)])
def test_client_errors_are_failed_requests_and_only_transient_ones_retried(error, retried):
    # review: httpx errors outside TransportError escaped answer_one and stopped the whole run, and a
    # bad URL scheme (UnsupportedProtocol) was retried as if it were a dropped connection
    import httpx

    def handler(request):
        raise getattr(httpx, error)("boom", request=request)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(RequestFailed) as info:
            post_with_retries(client, "http://x/api", {}, max_retries=2, backoff_s=0.0, sleep=lambda s: None)
    assert info.value.attempts == (3 if retried else 1)


def test_url_from_environment(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "myhost:1234")
    assert OllamaBackend("m").url == "http://myhost:1234"
    monkeypatch.delenv("OLLAMA_HOST")
    assert OllamaBackend("m").url == "http://127.0.0.1:11434"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://h:9/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "k-test")
    backend = OpenAIBackend("m")
    assert backend.url == "http://h:9/v1" and backend.headers() == {"Authorization": "Bearer k-test"}
    assert math.isfinite(backend.timeout_s)


def test_an_interrupt_cancels_the_queued_requests(images):
    with FakeVLMServer(delay_s=0.05) as srv:
        backend = OllamaBackend("good", url=srv.url, concurrency=1, timeout_s=2)
        requests = [VLMRequest(f"r{i}", images["red"], "q") for i in range(20)]

        def on_answer(answer):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            backend.answer_all(requests, on_answer)
        assert len(srv.requests) <= 3
