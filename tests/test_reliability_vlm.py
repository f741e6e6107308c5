"""Issue 14, item 9: VLM answers — a size cap per answer (stored once, cut with a note), --timeout
bounds the whole request, out-of-range stated confidences handled one documented way, and each
image encoded once per run."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("httpx")

from dermbench.models.frameworks.http import OllamaBackend, OpenAIBackend  # noqa: E402
from dermbench.models.vlm.base import VLMRequest  # noqa: E402
from dermbench.models.vlm.testing import FakeVLMServer  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("img")
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200), (120, 120, 120)]):
        path = folder / f"im{i}.jpg"
        Image.new("RGB", (48, 40), colour).save(path)
        paths.append(str(path))
    return paths


def _requests(images):
    return [VLMRequest(Path(p).stem, p, "benign or malignant?") for p in images]


class TrickleServer:
    """A server that sends its reply one byte at a time (headers too, when ``headers_too``)."""

    def __init__(self, interval: float, headers_too: bool = False):
        self.interval, self.headers_too = interval, headers_too
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            if request.startswith(b"GET"):  # the reachability check
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            head, _, body = request.partition(b"\r\n\r\n")
            length = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0])
            while len(body) < length:
                body += conn.recv(65536)
            payload = json.dumps({"message": {"content": "malignant"}, "done": True}).encode()
            headers = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            if self.headers_too:
                data = headers.encode() + payload
            else:
                conn.sendall(headers.encode())
                data = payload
            for k in range(len(data)):
                if self.stop.is_set():
                    return
                conn.sendall(data[k:k + 1])
                time.sleep(self.interval)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("headers_too", [False, True])
def test_timeout_bounds_the_whole_request_not_each_read(images, headers_too):
    server = TrickleServer(interval=0.05, headers_too=headers_too)  # ~3 s for the whole reply
    try:
        backend = OllamaBackend("m", url=server.url, timeout_s=0.5, max_retries=0, backoff_s=0.01, concurrency=1)
        answers = []
        t0 = time.perf_counter()
        backend.answer_all(_requests(images[:1]), answers.append)
        took = time.perf_counter() - t0
    finally:
        server.close()
    assert answers[0].failed and "timed out" in answers[0].error and "0.5" in answers[0].error
    assert took < 1.5, took


class BigReplyServer(FakeVLMServer):
    """Answers with ``size`` characters of text before a JSON answer (a model that rambles on)."""

    def __init__(self, size: int, **kw):
        super().__init__(**kw)
        self.size = size

    def respond(self, path, body):
        status, headers, reply = super().respond(path, body)
        if isinstance(reply, dict) and "message" in reply:
            reply["message"]["content"] = "lesion " * (self.size // 7) + '{"label": "malignant", "confidence": 0.9}'
            reply.pop("logprobs", None)
        return status, headers, reply


def test_a_reply_over_the_response_cap_is_a_failed_request_without_reading_it_whole(images, monkeypatch):
    from dermbench.models.frameworks import http

    monkeypatch.setattr(http, "MAX_RESPONSE_BYTES", 200_000)
    with BigReplyServer(1_000_000) as server:
        backend = OllamaBackend("good", url=server.url, timeout_s=5, max_retries=2, backoff_s=0.01, concurrency=1)
        answers = []
        backend.answer_all(_requests(images[:1]), answers.append)
    assert answers[0].failed and "larger than 200,000 bytes" in answers[0].error
    assert answers[0].attempts == 1  # not retried: it would be as large again


def test_a_long_answer_is_cut_with_a_note_and_stored_once(tmp_path, monkeypatch):
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.paradigms.zeroshot import cell as zeroshot_cell
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_predictions

    monkeypatch.setattr(zeroshot_cell, "MAX_ANSWER_CHARS", 5_000)
    monkeypatch.setattr(zeroshot_cell, "RAW_ANSWER_PREVIEW", 1_000)
    synth = make_synthetic_dataset(tmp_path / "synth", n=30, size=32, progress=False)
    with BigReplyServer(50_000) as server:
        spec = CellSpec("t", "zeroshot", model="ollama:good", dataset=str(synth), seed=1, n_boot=0, quiet=True,
                        settings={"prompt_set": "simple", "url": server.url, "timeout_s": 5, "max_retries": 0,
                                  "concurrency": 2})
        result = execute_cell(spec, tmp_path / "runs")
    assert result.status == "done", result.error
    cached = [json.loads(line) for line in (result.path / "work" / "answers.jsonl").read_text().splitlines()]
    assert all(len(r["text"]) <= 5_000 + 200 and r["truncated_chars"] > 40_000 for r in cached)
    assert all("[answer cut: " in r["text"] for r in cached)
    preds = read_predictions(result.path, "test")
    # the predictions keep a short preview; the capped answer is stored once, in work/answers.jsonl
    assert preds["raw_answer"].str.len().max() < 1_200
    assert preds["raw_answer"].str.contains("work/answers.jsonl").all()
    # the label came after the cut: unparsed, scored wrong, counted
    assert set(preds["parse_status"]) == {"no_label"}
    total = sum(p.stat().st_size for p in result.path.rglob("*") if p.is_file())
    assert total < 30 * 5_000 * 2


@pytest.mark.parametrize("value,expected", [
    (0.8, 0.8), ("80%", 0.8), (80, 0.8), (92.5, 0.925), ("1.7%", 0.017), (1, 1.0), (0, 0.0),
    (1.7, None), (7, None), (10, None), ("5", None), (150, None), ("150%", None), (-0.2, None), ("-5%", None),
    (float("nan"), None), (float("inf"), None),
])
def test_stated_confidence_outside_its_scale_is_ignored(value, expected):
    from dermbench.paradigms.zeroshot.parsing import parse_confidence

    got = parse_confidence(value)
    assert (got is None and expected is None) or math.isclose(got, expected), got


def test_an_out_of_range_confidence_falls_back_to_the_label_and_says_so():
    from dermbench.paradigms.zeroshot.parsing import parse_answer, score_answer

    parsed = parse_answer('{"label": "malignant", "confidence": 1.7}')
    assert parsed.label == 1 and parsed.confidence is None and "out of range" in parsed.detail
    scored = score_answer('{"label": "malignant", "confidence": 1.7}', 0)
    assert scored.score_source == "label" and scored.p_malignant == 1.0


def test_answers_whose_confidence_was_ignored_are_counted_and_named(tmp_path, monkeypatch):
    """A model that states its confidence on a 1-10 scale has every confidence ignored and is
    scored by its hard labels: a different AUROC than its confidences would give, so the record
    counts those answers and the console says so."""
    import logging

    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.models.vlm import testing
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics

    monkeypatch.setattr(testing, "_answer_text", lambda label, p, wants_json: (
        json.dumps({"label": label, "confidence": 7}), None))
    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logging.getLogger("dermbench").addHandler(handler)
    synth = make_synthetic_dataset(tmp_path / "synth", n=30, size=32, progress=False)
    try:
        with FakeVLMServer() as server:
            spec = CellSpec("t", "zeroshot", model="openai:scale10", dataset=str(synth), seed=1, n_boot=0,
                            quiet=True, settings={"prompt_set": "simple", "url": server.url, "timeout_s": 5,
                                                  "max_retries": 0, "answer_format": "json"})
            result = execute_cell(spec, tmp_path / "runs")
    finally:
        logging.getLogger("dermbench").removeHandler(handler)
    assert result.status == "done", result.error
    extra = read_metrics(result.path)["extra"]
    answered = sum(extra["parse_status"].values())
    assert extra["confidence_out_of_range"] == answered > 0
    assert extra["score_source"] == {"label": 1.0}
    assert any("stated a confidence outside 0-1" in w for w in warnings), warnings


def test_each_image_is_encoded_once_per_run_and_each_request_serialised_once(images, monkeypatch):
    from dermbench.models.frameworks import http

    encoded = []
    real = http.encode_image

    def counting(image, *args, **kwargs):
        encoded.append(image.size)
        return real(image, *args, **kwargs)

    monkeypatch.setattr(http, "encode_image", counting)
    with FakeVLMServer() as server:
        backend = OpenAIBackend("flaky500", url=server.url + "/v1", timeout_s=5, max_retries=2, backoff_s=0.01,
                                concurrency=2)
        requests = _requests(images) + [VLMRequest("again", images[0], "second question about the same image")]
        answers = []
        backend.answer_all(requests, answers.append)
        bodies = [r["body"] for r in server.requests]
    assert not any(a.failed for a in answers)
    assert len(encoded) == len(images)  # a retry and a second request reuse the encoding
    # every retried request was sent with the same body as its first attempt
    first = {json.dumps(b, sort_keys=True) for b in bodies}
    assert len(first) == len(requests)


def test_benchmark_script_reports_medians_with_and_without_a_busy_neighbour():
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "vlm_server.py"
    done = subprocess.run([sys.executable, str(script), "--images", "16", "--delay", "0.02", "--concurrency", "4",
                           "--repeats", "1", "--busy-neighbour"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "busy neighbour" in done.stdout and "median ratio" in done.stdout
