"""Settings of the zeroshot paradigm (validated at the edge; no torch, no HTTP client here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ZeroshotSettings(BaseModel):
    """How a zeroshot cell runs with the model of ``CellSpec.model``: the prompt set and
    everything else that changes the answers or how they are obtained.

    Answer-changing fields (temperature, tokens, answer format, image size, logprobs ...) are part of
    the per-record answer cache key, so changing one re-asks every image instead of mixing answers.
    """

    model_config = ConfigDict(extra="forbid")

    prompt_set: str | None = Field(
        None, description="prompt set name (`dermbench ls prompt-sets`) or YAML path; None: derm_ensemble for "
                          "dual encoders, simple for generative models")

    # -- where the weights / the server are --------------------------------------------------------
    weights: str = Field(
        "default", description="'default' (the model's own source), a local folder/file with its weights "
                               "(HF folder, open_clip checkpoint), or 'random': the architecture untrained "
                               "(tests and smoke runs only)")
    url: str | None = Field(None, description="server base URL for ollama:/openai: models "
                                              "(default: $OLLAMA_HOST / $OPENAI_BASE_URL, else localhost)")
    trust_remote_code: bool = Field(False, description="allow a Hugging Face model's own code (Phi-3.5-vision)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    # -- dual encoders -------------------------------------------------------------------------------
    batch_size: int = Field(16, ge=1, description="images per forward pass (dual encoders, local VLMs)")
    dual_scoring: Literal["auto", "softmax", "sigmoid"] = Field(
        "auto", description="auto: softmax for CLIP-style models, sigmoid for SigLIP-style models")

    # -- generative VLMs ------------------------------------------------------------------------------
    answer_format: Literal["json", "word", "study"] = Field(
        "json", description="json: ask for {label, confidence} (constrained where the backend can); "
                            "word: append 'answer with one word'; study: append nothing (the prompt's own text "
                            "asks, as in the study; a study prompt file always runs as study)")
    temperature: float = Field(0.0, ge=0.0, description="sampling temperature sent to servers (0: greedy); "
                                                         "local Hugging Face generation is always greedy")
    max_new_tokens: int = Field(256, ge=1, description="tokens to generate (Ollama num_predict, OpenAI max_tokens)")
    logprobs: bool = Field(True, description="request token log-probabilities for a continuous P(malignant)")
    top_logprobs: int = Field(5, ge=1, le=20)
    max_image_side: int | None = Field(1024, ge=32, description="downscale larger images before sending "
                                                                "(None: send at full size)")
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(95, ge=1, le=100, description="JPEG quality of images sent to servers (the "
                                                             "study re-encoded at Pillow's default, 75)")
    metadata_block: Literal["auto", "isic", "isic2024", "pad", "none"] = Field(
        "auto", description="the study's metadata block that fills a study prompt file's empty user prompt: "
                            "auto = by the dataset card's source (isic2018/isic-archive: isic, isic2024, "
                            "pad-ufes-20: pad, others: none)")
    ollama_api: Literal["chat", "generate"] = Field(
        "chat", description="Ollama endpoint: chat (/api/chat, system message, JSON schema, seed, num_predict) or "
                            "generate (/api/generate as the study sent it: '[SYSTEM PROMPT]...[USER PROMPT]...' in "
                            "one prompt, options {temperature} only)")
    metadata_columns: dict[str, str] | None = Field(
        None, description="dataset column -> label shown in a metadata prompt ('Label [unit]' adds a unit); "
                          "replaces the prompt set's mapping")

    # -- servers: throughput and robustness -------------------------------------------------------------
    concurrency: int = Field(4, ge=1, le=256, description="requests in flight at once")
    timeout_s: float = Field(120.0, gt=0, description="seconds one request may take in all (connect, send, wait, "
                                                       "read the whole answer); each retry gets as long")
    max_retries: int = Field(3, ge=0, description="retries on connection errors, timeouts, 429 and 5xx")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry (Retry-After wins)")
    prompt_set_hash: str | None = Field(
        None, description="content hash of the prompt set when the cell was planned (filled in by "
                          "`dermbench zeroshot` and `dermbench run`): a complete cell recorded with "
                          "another hash was asked other prompts and is redone")
    max_failed_rate: float = Field(
        0.5, ge=0.0, le=1.0,
        description="fail the cell (answers kept for resume) when more requests than this fraction failed; "
                    "below it the cell completes and failed requests are scored as wrong")

    @field_validator("weights")
    @classmethod
    def _random_alias(cls, v: str) -> str:
        return "random" if v in ("random-init", "random_init") else v

    @field_validator("metadata_columns")
    @classmethod
    def _non_empty(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and not v:
            raise ValueError("metadata_columns must map at least one column, or be left out")
        return v

    def answer_key_fields(self) -> dict[str, object]:
        """The fields that change what a generative model answers (part of the answer cache key).
        Fields added later enter the key only away from their default, so answers cached before
        they existed stay valid."""
        out: dict[str, object] = {k: getattr(self, k) for k in (
            "answer_format", "temperature", "max_new_tokens", "logprobs", "top_logprobs", "max_image_side",
            "image_format", "metadata_columns", "weights", "dtype")}
        for key, default in (("jpeg_quality", 95), ("metadata_block", "auto"), ("ollama_api", "chat")):
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        return out
