"""``dermbench zeroshot``: score a dataset with a dual encoder or a generative VLM, one cell per seed."""

from __future__ import annotations

import argparse
import json

from ..errors import UsageError
from .cells import add_cell_arguments, cell_specs, run_and_summarise, settings_from, validate


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "zeroshot", help="score a dataset with no training: dual encoders (CLIP, SigLIP ...) or generative VLMs",
        description="Zeroshot classification into a run record. Dual encoders score the prompt set's class "
                    "prompts (softmax for CLIP-style, sigmoid for SigLIP-style models). Generative VLMs answer "
                    "the prompt set's question per image, locally (Hugging Face) or through a server (Ollama, "
                    "any OpenAI-compatible server); answers are parsed, unparsed answers and failed requests are "
                    "counted and scored as wrong. A killed run resumes without re-asking answered images.",
        epilog="models: `dermbench ls zeroshot-models`, or a prefix name:\n"
               "  ollama:<model[:tag]>   Ollama /api/chat        (--url or $OLLAMA_HOST, default http://127.0.0.1:11434)\n"
               "  openai:<model>         OpenAI-compatible server (--url or $OPENAI_BASE_URL, key $OPENAI_API_KEY)\n"
               "  hf:<repo>              local Hugging Face image-text-to-text model\n"
               "  clip:<repo>  siglip:<repo>  open_clip:<name>[/<pretrained>]|open_clip:hf-hub:<repo>\n"
               "prompt sets: `dermbench ls prompt-sets` (dual: derm_ensemble, bare_words; generative: image_only,\n"
               "  simple, patient_metadata, abcde) or a path to your own YAML file.\n\n"
               "examples:\n"
               "  dermbench zeroshot --model clip_vit_b32 --dataset datasets/ham10000 --prompt bare_words\n"
               "  dermbench zeroshot --model ollama:llama3.2-vision:11b --dataset datasets/pad_ufes_20 \\\n"
               "      --prompt patient_metadata --concurrency 8\n"
               "  dermbench zeroshot --model openai:Qwen/Qwen2.5-VL-7B-Instruct --url http://gpu-box:8000/v1 \\\n"
               "      --dataset datasets/ddi --prompt abcde\n\n"
               "Every setting of the paradigm (paradigms/zeroshot/settings.py) can be given with --set KEY=VALUE,\n"
               "e.g. --set dtype=bfloat16; options left out take the settings' defaults.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="zeroshot model name or prefix name (see below)")
    p.add_argument("--dataset", required=True, help="dataset folder in the contract layout")
    p.add_argument("--prompt", help="prompt set name or YAML path (default: derm_ensemble for dual encoders, "
                                    "simple for generative VLMs)")
    p.add_argument("--url", help="server base URL for ollama:/openai: models")
    p.add_argument("--concurrency", type=int, help="requests in flight at once (servers; default 4)")
    p.add_argument("--timeout", type=float, help="seconds one request may take in all: connecting, sending, waiting "
                                                 "and reading the answer (default 120; each retry gets as long)")
    p.add_argument("--retries", type=int, help="retries on connection errors, timeouts, 429 and 5xx (default 3)")
    p.add_argument("--answer-format", choices=("json", "word", "study"),
                   help="json: ask for {label, confidence} (default); word: append a one-word instruction; study: "
                        "append nothing (the study's prompt files always run so)")
    p.add_argument("--no-logprobs", action="store_false", dest="logprobs", default=None,
                   help="do not request token log-probabilities")
    p.add_argument("--max-new-tokens", type=int, help="tokens to generate (default 256)")
    p.add_argument("--max-image-side", type=int, help="downscale images sent to a VLM to this side (default 1024)")
    p.add_argument("--metadata-columns", help="JSON mapping of dataset column -> label for metadata prompts, "
                                              "e.g. '{\"age_approx\": \"Age [years]\"}'")
    p.add_argument("--weights", help="'default' (the model's own source), a local weights folder/file, "
                                     "or 'random' (tests, smoke runs only)")
    p.add_argument("--batch-size", type=int, help="images per forward pass (dual encoders, local VLMs; default 16)")
    add_cell_arguments(p, experiment="zeroshot", force_help="redo complete cells and discard cached answers")
    p.set_defaults(func=run)
    return p


def build_specs(args: argparse.Namespace) -> list:
    """One :class:`~dermbench.runs.cell.CellSpec` per seed, validated before anything runs."""
    from ..paradigms.zeroshot.block import ZeroshotBlock
    from ..paradigms.zeroshot.prompts import DEFAULT_PROMPT_SET, load_prompt_set

    spec = ZeroshotBlock.resolve_model(args.model)  # unknown -> did-you-mean
    metadata_columns = None
    if args.metadata_columns:
        try:
            metadata_columns = json.loads(args.metadata_columns)
        except ValueError as exc:
            raise UsageError(f"--metadata-columns is not a JSON mapping: {exc}") from None
    values = settings_from(args, {
        "prompt_set": args.prompt, "url": args.url, "concurrency": args.concurrency, "timeout_s": args.timeout,
        "max_retries": args.retries, "answer_format": args.answer_format, "max_new_tokens": args.max_new_tokens,
        "max_image_side": args.max_image_side, "weights": args.weights, "batch_size": args.batch_size,
        "logprobs": args.logprobs, "metadata_columns": metadata_columns})
    kind = spec.zeroshot_kind
    name = values.get("prompt_set") or DEFAULT_PROMPT_SET[kind]
    prompt_set = load_prompt_set(name)
    if prompt_set.kind != kind:
        raise UsageError(f"{args.model} is a {kind} model; prompt set {prompt_set.name!r} is for {prompt_set.kind} "
                         f"models (try --prompt {DEFAULT_PROMPT_SET[kind]})")
    # the prompt set and its content hash, as a grid block records them (the same cell either way)
    values.update(prompt_set=name, prompt_set_hash=prompt_set.content_hash)
    return cell_specs(args, "zeroshot", spec.name, [validate(ZeroshotBlock, values)])


def run(args: argparse.Namespace) -> int:
    def rates(metrics: dict, spec) -> str:
        extra = metrics.get("extra", {})
        if extra.get("kind") != "generative":
            return ""
        return f"unparsed {extra['unparsed_rate']:.1%} failed {extra['failed_rate']:.1%}"

    return run_and_summarise(build_specs(args), args, rates)
