"""Dataset sources for ``dermbench prepare``: one module per published dataset, one line here."""

from ...registry import Registry

SOURCES = Registry("dataset source")
