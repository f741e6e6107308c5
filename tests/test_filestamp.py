"""One file-stamp memo (utils.filestamp) for the sha256 manifest, the image decode check and
weights hashes: an unchanged file is not read again, a replaced one always is (``cp -p`` too)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dermbench.utils.filestamp import FileStampMemo, sha256_file


def counting(calls: list[str]):
    def compute(path: str) -> str:
        calls.append(path)
        return sha256_file(path)
    return compute


def same_size_other_bytes(path: Path, tmp: Path) -> Path:
    """A file with ``path``'s size and mtime but different bytes (what ``cp -p`` / ``rsync -a`` bring in)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    other = tmp / "other.bin"
    other.write_bytes(bytes(data))
    st = path.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    return other


def copy_preserving(src: Path, dest: Path) -> None:
    """``cp -p src dest`` (writes into the existing dest: same inode), or its Python equivalent."""
    if shutil.which("cp"):
        subprocess.run(["cp", "-p", str(src), str(dest)], check=True)
    else:
        shutil.copy2(src, dest)


def test_unchanged_file_is_not_read_again_and_memo_persists(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"x" * 1000)
    calls: list[str] = []
    with FileStampMemo("unit", "scope") as memo:
        first = memo.get(target, counting(calls))
        assert memo.get(target, counting(calls)) == first
    with FileStampMemo("unit", "scope") as memo:  # read back from the cache folder
        assert memo.get(target, counting(calls)) == first
    assert calls == [str(target)]


@pytest.mark.parametrize("how", ["cp -p onto the file", "rename over the file"])
def test_same_size_and_mtime_replacement_is_recomputed(tmp_path, how):
    target = tmp_path / "a.bin"
    target.write_bytes(b"lesion" * 500)
    with FileStampMemo("unit", "scope") as memo:
        old = memo.get(target, sha256_file)
    before = target.stat()
    other = same_size_other_bytes(target, tmp_path)
    if how == "cp -p onto the file":
        copy_preserving(other, target)
        assert target.stat().st_ino == before.st_ino  # written in place: the inode is unchanged too
    else:
        os.replace(other, target)
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    calls: list[str] = []
    with FileStampMemo("unit", "scope") as memo:
        new = memo.get(target, counting(calls))
    assert calls == [str(target)] and new != old and new == sha256_file(target)


def test_another_context_is_not_reused(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"y" * 10)
    with FileStampMemo("unit", "scope", context="pillow 1") as memo:
        memo.get(target, lambda p: "v1")
    with FileStampMemo("unit", "scope", context="pillow 2") as memo:
        assert memo.get(target, lambda p: "v2") == "v2"


def test_missing_file_is_computed_and_not_remembered(tmp_path):
    with FileStampMemo("unit", "scope") as memo:
        assert memo.get(tmp_path / "nope.jpg", lambda p: "missing") == "missing"
        assert memo.get(tmp_path / "nope.jpg", lambda p: "again") == "again"


def test_weights_hash_sees_a_checkpoint_copied_in_with_cp_p(tmp_path):
    """models.weights.sha256_file keyed its memo on (path, size, mtime) only, so a checkpoint
    replaced by ``cp -p`` kept its old hash (and its cells their old identity)."""
    from dermbench.models.weights import sha256_file as weights_sha256

    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(os.urandom(4096))
    old = weights_sha256(ckpt)
    copy_preserving(same_size_other_bytes(ckpt, tmp_path), ckpt)
    assert weights_sha256(ckpt) == sha256_file(ckpt) != old


def test_dataset_fingerprint_sees_an_image_copied_in_with_cp_p(tmp_path):
    from test_contract import make_clean

    from dermbench.data.contract import load_dataset

    root = make_clean(tmp_path / "d")
    before = load_dataset(root, quiet=True)
    victim = root / "images" / "train_0.jpg"
    copy_preserving(same_size_other_bytes(victim, tmp_path), victim)
    after = load_dataset(root, quiet=True, check_images=False)
    assert after.manifest["train_0.jpg"] == sha256_file(victim) != before.manifest["train_0.jpg"]
    assert after.fingerprint != before.fingerprint
