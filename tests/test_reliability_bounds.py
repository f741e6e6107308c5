"""Issue 14, item 8: bounds at the config and command-line edges (seeds, n_boot) and a pixel
limit for images (an exclusion with its reason, and no Pillow warning on the console)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from dermbench.errors import ConfigError

MINIMAL = """\
experiment: e
datasets: [d]
grid:
  - paradigm: finetune
    models: [resnet10t]
"""


# -- item 8: bounds -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seeds", ["[-1]", "[1e20]", "[true]", "[1.5]", "[4294967296]"])
def test_seeds_must_be_whole_numbers_in_numpys_range(tmp_path, seeds):
    from dermbench.runner.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(MINIMAL + f"seeds: {seeds}\n")
    with pytest.raises(ConfigError, match="seeds"):
        load_config(cfg)
    block_seeds = MINIMAL + f"    seeds: {seeds}\n"
    cfg.write_text(block_seeds)
    with pytest.raises(ConfigError, match="seeds"):
        load_config(cfg)


def test_seed_bounds_are_accepted_at_the_edges(tmp_path):
    from dermbench.runner.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(MINIMAL + "seeds: [0, 4294967295]\n")
    assert load_config(cfg).seeds == [0, 4294967295]


def test_n_boot_has_a_documented_maximum(tmp_path, capsys):
    from dermbench.cli.main import main
    from dermbench.runner.config import load_config
    from dermbench.runs.bounds import N_BOOT_MAX

    cfg = tmp_path / "c.yaml"
    cfg.write_text(MINIMAL + "n_boot: 1000000000000\n")
    with pytest.raises(ConfigError, match=f"n_boot.*{N_BOOT_MAX}"):
        load_config(cfg)
    cfg.write_text(MINIMAL + "n_boot: true\n")  # as for seeds: not read as 1 replicate
    with pytest.raises(ConfigError, match="n_boot.*got True"):
        load_config(cfg)
    cfg.write_text(MINIMAL + f"n_boot: {N_BOOT_MAX}\n")
    assert load_config(cfg).n_boot == N_BOOT_MAX
    assert main(["score", str(cfg), "--truth", str(tmp_path), "--n-boot", "1000000000000"]) == 2
    err = capsys.readouterr().err
    assert "--n-boot" in err and str(N_BOOT_MAX) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["score", "p.csv", "--truth", ".", "--seed", "-1"],
    ["score", "p.csv", "--truth", ".", "--seed", "1e20"],
    ["probe", "--backbone", "handcrafted", "--dataset", ".", "--seeds", "-1"],
    ["synth", "--out", "x", "--seed", "-3"],
])
def test_seed_options_out_of_range_are_one_line_errors(argv, capsys):
    from dermbench.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed" in err and "0" in err and "4294967295" in err, err


def _image(path: Path, size: tuple[int, int]) -> Path:
    from PIL import Image

    Image.new("RGB", size, (120, 60, 30)).save(path)
    return path


def test_an_image_over_the_pixel_limit_is_an_exclusion_and_pillows_warning_stays_quiet(tmp_path, monkeypatch):
    from PIL import Image

    from dermbench.data import images
    from dermbench.errors import ImageReadError

    # the limit made small so that the test images stay small: between 1x and 2x the limit is where
    # Pillow itself only warns (DecompressionBombWarning) and decodes anyway
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10_000)
    big = _image(tmp_path / "big.png", (150, 100))     # 15,000 pixels
    fine = _image(tmp_path / "fine.png", (100, 100))   # 10,000 pixels: at the limit is allowed
    with pytest.raises(ImageReadError) as err:
        images.open_rgb(big)
    assert images.open_rgb(fine).size == (100, 100)
    assert err.value.reason == "image_too_large"
    assert "150x100 = 15,000 pixels" in err.value.detail and "limit of 10,000" in err.value.detail
    # Pillow at the same limit (it warns from 1x to 2x its limit and decodes anyway): still refused,
    # also where warnings are errors
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageReadError) as err:
            images.open_rgb(big)
    assert err.value.reason == "image_too_large" and "limit of 10,000" in err.value.detail


def test_pillows_decompression_bomb_warning_never_reaches_the_console(tmp_path):
    import subprocess
    import sys

    big = _image(tmp_path / "big.png", (150, 100))
    code = ("from PIL import Image\n"
            "from dermbench.data import images\n"
            "images.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS = 10_000\n"
            "try:\n"
            f"    images.open_rgb({str(big)!r})\n"
            "except images.ImageReadError as exc:\n"
            "    print(exc.reason)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "image_too_large", done.stderr
    assert "DecompressionBomb" not in done.stderr and done.stderr.strip() == ""


def test_a_too_large_image_is_excluded_by_the_loader(tmp_path, monkeypatch):
    from PIL import Image

    from dermbench.data import images
    from dermbench.data.contract import load_dataset
    from dermbench.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "d", n=40, size=32, seed=0, progress=False)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 2000)
    import pandas as pd

    victim = pd.read_csv(root / "test_metadata.csv", dtype=str)["img_id"].iloc[0]
    path = next((root / "images").glob(f"{Path(victim).stem}.*"))
    Image.new("RGB", (60, 50), (1, 2, 3)).save(path, format="PNG" if path.suffix == ".png" else "JPEG")
    ds = load_dataset(root, quiet=True)
    too_large = [e for e in ds.exclusions if e.reason == "image_too_large"]
    assert [e.img_id for e in too_large] == [victim]
