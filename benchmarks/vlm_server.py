"""VLM server throughput: the study's one-request-at-a-time loop vs the concurrent client.

    python benchmarks/vlm_server.py [--images 48] [--delay 0.1] [--concurrency 1 4 8 16] [--api ollama|openai]

Starts the local stand-in server (``dermbench.models.vlm.testing.FakeVLMServer``) that answers each
request after a fixed ``--delay`` seconds (what a GPU-bound model server looks like from the
client), writes ``--images`` small JPEGs, and times the real client
(:class:`dermbench.models.frameworks.http.OllamaBackend` / ``OpenAIBackend``: image encoding, JSON
schema, retries, logprobs parsing) asking about every image: once sequentially (concurrency 1, the
study's way) and once per ``--concurrency`` value. Prints images/s and the speed-up ratio over
sequential. A real server is bounded by its own batch capacity (``OLLAMA_NUM_PARALLEL``, vLLM's
continuous batching), so the ratio is the ceiling the client no longer limits, not a promise.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--delay", type=float, default=0.1, help="server seconds per answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--api", choices=("ollama", "openai"), default="ollama")
    args = parser.parse_args(argv)

    from dermbench.models.vlm.testing import FakeVLMServer

    with tempfile.TemporaryDirectory() as tmp, FakeVLMServer(delay_s=args.delay) as server:
        paths = write_images(Path(tmp), args.images)
        print(f"{args.images} images, server answers after {args.delay:.3f} s, {args.api} API at {server.url}")
        base, failed = run_once(args.api, server.url, paths, 1)
        print(f"  sequential (study)   {base:8.2f} images/s   failed {failed}")
        for c in args.concurrency:
            rate, failed = run_once(args.api, server.url, paths, c)
            print(f"  concurrency {c:<4}     {rate:8.2f} images/s   failed {failed}   ratio {rate / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
