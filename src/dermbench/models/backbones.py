"""Registry of frozen embedding backbones for the probe paradigm."""

from ..registry import Registry

BACKBONES = Registry("probe backbone")
