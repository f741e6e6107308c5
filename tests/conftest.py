"""Shared pytest fixtures: real published fixtures (skipped when absent), tiny datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
FIXTURES_RAW = Path(os.environ.get("DERMBENCH_FIXTURES", REPO.parent / "shared" / "fixtures" / "raw"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session writes caches to a temp folder, never to the user's cache."""
    cache = tmp_path_factory.getbasetemp() / "dermbench-cache"
    monkeypatch.setenv("DERMBENCH_CACHE", str(cache))


@pytest.fixture(scope="session")
def fixtures_raw() -> Path:
    """The real published dataset files in ../shared/fixtures/raw (see its README)."""
    if not FIXTURES_RAW.is_dir():
        pytest.skip(f"real dataset fixtures not found at {FIXTURES_RAW} (set DERMBENCH_FIXTURES)")
    return FIXTURES_RAW
