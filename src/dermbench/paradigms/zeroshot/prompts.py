"""Registry of prompt sets (YAML files shipped under ``configs/prompts``)."""

from ...registry import Registry

PROMPT_SETS = Registry("prompt set")
