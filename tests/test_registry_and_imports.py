"""Registries are lazy and helpful; importing dermbench imports no heavy backend."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dermbench.plugins import REGISTRIES, get_registry
from dermbench.registry import Registry, UnknownNameError

HEAVY = ("torch", "torchvision", "timm", "transformers", "open_clip", "tensorflow", "httpx", "ray", "xgboost")


def test_unknown_name_suggests_close_matches() -> None:
    reg = Registry("model")
    reg.add("resnet18", "json:dumps", "a model")
    reg.add("resnet152", "json:loads")
    with pytest.raises(UnknownNameError) as err:
        reg.entry("resnet81")
    assert "Did you mean: resnet18" in str(err.value)
    assert "Available: resnet152, resnet18" in str(err.value)
    assert reg.get("RESNET18").__name__ == "dumps"  # case-insensitive, loaded lazily
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("resnet18", "json:dumps")


def test_every_registry_entry_points_at_something_real() -> None:
    """Each registered target must import (a typo in a registry line fails here, not in a run)."""
    problems = []
    for kind in REGISTRIES:
        for entry in get_registry(kind):
            try:
                entry.load()
            except ModuleNotFoundError as exc:
                # an optional extra (tensorflow, ray, ...) may be absent; a missing dermbench module may not
                if exc.name and exc.name.startswith("dermbench"):
                    problems.append(f"{kind}/{entry.name}: {exc}")
            except AttributeError as exc:
                problems.append(f"{kind}/{entry.name}: {exc}")
    assert not problems, problems


def test_import_and_cli_help_do_not_import_heavy_backends() -> None:
    code = ("import sys, dermbench, dermbench.plugins\n"
            "from dermbench.cli.main import build_parser\n"
            "build_parser()\n"
            "for kind in dermbench.plugins.REGISTRIES: list(dermbench.plugins.get_registry(kind))\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"
