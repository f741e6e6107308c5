"""Registry of probe heads (classical and MLP)."""

from ...registry import Registry

HEADS = Registry("probe head")
