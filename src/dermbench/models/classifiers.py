"""Registry of finetune classifiers (timm / torchvision names and the study's 15 models)."""

from ..registry import Registry

CLASSIFIERS = Registry("finetune model")
