"""Registry of zeroshot models: dual encoders and generative VLM backends."""

from ..registry import Registry

ZEROSHOT_MODELS = Registry("zeroshot model")
