"""Zeroshot paradigm: dual encoders score prompts; generative VLMs answer a prompt."""
