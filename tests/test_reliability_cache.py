"""Issue 14, item 3: embedding shards carry checksums verified on read; a shard whose bytes
changed (same size) is recomputed with a warning naming it; NaN/inf read from a shard is a
CacheError naming it."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from dermbench.errors import CacheError
from dermbench.paradigms.probe.embed_cache import embed_split


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from dermbench.data.contract import load_dataset
    from dermbench.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "synth", n=60, size=32, seed=0, progress=False)
    return load_dataset(root, quiet=True)


@pytest.fixture
def warnings_logged():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("dermbench")
    handler = Keep(logging.WARNING)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def mean_colour_embedder(name: str):
    from dermbench.models.embedders.base import Embedder

    calls = {"images": 0}

    def forward(batch):
        calls["images"] += len(batch)
        x = batch.float().numpy() / 255.0
        return np.concatenate([x.mean(axis=(2, 3)), x.std(axis=(2, 3))], axis=1)

    return Embedder(name=name, weights_identity="none", embed_dim=6, image_size=32, input_kind="uint8",
                    forward=forward), calls


def overwrite_rows_in_place(shard_file, rows: slice, value: float) -> None:
    """The issue's corruption: rows overwritten inside the file, its size unchanged."""
    size = shard_file.stat().st_size
    arr = np.load(shard_file, mmap_mode="r+")
    arr[rows] = value
    arr.flush()
    del arr
    assert shard_file.stat().st_size == size


def test_a_shard_changed_in_place_is_recomputed_with_a_warning_naming_it(dataset, warnings_logged):
    emb, calls = mean_colour_embedder("checksummed")
    first = embed_split(emb, dataset, "train", progress=False, shard_size=16)
    meta = json.loads((first.path / "meta.json").read_text())
    assert len(meta["shard_sha256"]) == meta["shards"] >= 2
    victim = first.path / "shard-00001.npy"
    overwrite_rows_in_place(victim, slice(0, 5), 0.123)

    calls["images"] = 0
    again = embed_split(emb, dataset, "train", progress=False, shard_size=16)
    assert not again.hit and calls["images"] == 16  # only the changed shard was embedded again
    assert np.array_equal(again.vectors, first.vectors)
    warned = [r.getMessage() for r in warnings_logged]
    assert any(str(victim) in m and "checksum" in m for m in warned), warned
    assert embed_split(emb, dataset, "train", progress=False, shard_size=16).hit  # and good again


def test_non_finite_values_read_from_a_shard_are_a_cache_error_naming_it(dataset):
    emb, _calls = mean_colour_embedder("nan-on-read")
    first = embed_split(emb, dataset, "validation", progress=False, shard_size=8)
    victim = first.path / "shard-00000.npy"
    overwrite_rows_in_place(victim, slice(2, 3), np.nan)
    # make the checksum agree, as in a cache written before shards were checked for NaN
    from dermbench.utils.filestamp import sha256_file

    meta = json.loads((first.path / "meta.json").read_text())
    meta["shard_sha256"][0] = sha256_file(victim)
    (first.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="shard-00000.npy") as err:
        embed_split(emb, dataset, "validation", progress=False, shard_size=8)
    assert "NaN" in str(err.value) and str(first.path) in str(err.value)


def test_an_entry_without_checksums_gets_them_without_re_embedding(dataset):
    emb, calls = mean_colour_embedder("legacy-entry")
    first = embed_split(emb, dataset, "test", progress=False, shard_size=8)
    meta = json.loads((first.path / "meta.json").read_text())
    del meta["shard_sha256"]
    (first.path / "meta.json").write_text(json.dumps(meta))
    calls["images"] = 0
    again = embed_split(emb, dataset, "test", progress=False, shard_size=8)
    assert calls["images"] == 0 and np.array_equal(again.vectors, first.vectors)
    assert "shard_sha256" in json.loads((first.path / "meta.json").read_text())
