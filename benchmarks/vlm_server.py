"""VLM server throughput: the study's one-request-at-a-time loop vs the concurrent client.

    python benchmarks/vlm_server.py [--images 64] [--delay 0.1] [--concurrency 4 8 16] [--api ollama|openai]
                                    [--repeats 5] [--busy-neighbour]

Starts the local stand-in server (``dermbench.models.vlm.testing.FakeVLMServer``) that answers each
request after a fixed ``--delay`` seconds (what a GPU-bound model server looks like from the
client), writes ``--images`` small JPEGs, and times the real client
(:class:`dermbench.models.frameworks.http.OllamaBackend` / ``OpenAIBackend``: image encoding, JSON
schema, retries, logprobs parsing) asking about every image: sequentially (concurrency 1, the
study's way) and at each ``--concurrency``, ``--repeats`` times, and prints the median images/s and
the median of the per-repeat speed-up ratios over sequential. ``--busy-neighbour`` measures again
while another process spins on one core (``python -c "while True: pass"``), as when other jobs
share the machine. A real server is bounded by its own batch capacity (``OLLAMA_NUM_PARALLEL``,
vLLM's continuous batching), so the ratio is the ceiling the client no longer limits, not a promise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_images(folder: Path, n: int, size: int = 64, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        grid = rng.integers(0, 255, size=(4, 4, 3), dtype=np.uint8)
        path = folder / f"im{i:04d}.jpg"
        Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR).save(path, quality=90)
        paths.append(str(path))
    return paths


def run_once(api: str, url: str, paths: list[str], concurrency: int) -> tuple[float, int]:
    from dermbench.models.vlm.base import VLMRequest
    from dermbench.models.frameworks.http import OllamaBackend, OpenAIBackend
    from dermbench.paradigms.zeroshot.prompts import load_prompt_set

    prompt_set = load_prompt_set("simple")
    cls = OllamaBackend if api == "ollama" else OpenAIBackend
    backend = cls("bench", url=url + ("/v1" if api == "openai" else ""), concurrency=concurrency, timeout_s=30,
                  max_retries=1, backoff_s=0.05)
    requests = [VLMRequest(f"im{i}", p, prompt_set.render(), prompt_set.system, prompt_set.json_schema())
                for i, p in enumerate(paths)]
    answers = []
    t0 = time.perf_counter()
    backend.answer_all(requests, answers.append)
    seconds = time.perf_counter() - t0
    failed = sum(a.failed for a in answers)
    return len(paths) / seconds, failed


def measure(api: str, url: str, paths: list[str], concurrency: list[int], repeats: int) -> dict[int, list[float]]:
    """images/s per concurrency (1 = sequential), ``repeats`` times each, interleaved."""
    rates: dict[int, list[float]] = {c: [] for c in [1, *concurrency]}
    for _ in range(repeats):
        for c in rates:
            rate, failed = run_once(api, url, paths, c)
            if failed:
                raise SystemExit(f"{failed} request(s) failed at concurrency {c}")
            rates[c].append(rate)
    return rates


def report(title: str, rates: dict[int, list[float]]) -> None:
    base = rates[1]
    print(f"{title}:")
    print(f"  sequential (study)   median {statistics.median(base):8.2f} images/s")
    for c, values in rates.items():
        if c == 1:
            continue
        ratios = [v / b for v, b in zip(values, base)]
        print(f"  concurrency {c:<4}     median {statistics.median(values):8.2f} images/s   median ratio "
              f"{statistics.median(ratios):5.2f}x   (ratios {min(ratios):.2f}-{max(ratios):.2f}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.1, help="server seconds per answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--api", choices=("ollama", "openai"), default="ollama")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per setting (medians are reported)")
    parser.add_argument("--busy-neighbour", action="store_true",
                        help="measure again while another process keeps one core busy")
    parser.add_argument("--server", choices=("process", "thread"), default="process",
                        help="run the stand-in server in its own process (default: as a real server runs, so its "
                             "CPU is not the client's) or in a thread of this one (shares the interpreter lock)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp, stand_in_server(args.delay, args.server) as url:
        paths = write_images(Path(tmp), args.images)
        print(f"{args.images} images, server answers after {args.delay:.3f} s ({args.server}), {args.api} API at "
              f"{url}, {args.repeats} repeat(s), {os.cpu_count()} CPU(s)")
        report("quiet machine" if not args.busy_neighbour else "without a busy neighbour",
               measure(args.api, url, paths, args.concurrency, args.repeats))
        if args.busy_neighbour:
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.2)
                report("with a busy neighbour (one core spinning)",
                       measure(args.api, url, paths, args.concurrency, args.repeats))
            finally:
                busy.kill()
                busy.wait()
    return 0


@contextlib.contextmanager
def stand_in_server(delay: float, where: str):
    """The URL of a FakeVLMServer answering after ``delay`` s, in this process or its own."""
    if where == "thread":
        from dermbench.models.vlm.testing import FakeVLMServer

        with FakeVLMServer(delay_s=delay) as server:
            yield server.url
        return
    code = ("import sys, time\n"
            "from dermbench.models.vlm.testing import FakeVLMServer\n"
            f"with FakeVLMServer(delay_s={delay!r}) as s:\n"
            "    print(s.url, flush=True)\n"
            "    sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield child.stdout.readline().strip()
    finally:
        child.stdin.close()
        child.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
