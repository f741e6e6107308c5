"""A seeded synthetic lesion dataset drawn by the ABCD rule (``dermbench synth``).

This is a **demo and test fixture, never a medical result**: the images are drawn with numpy,
not photographed, and no finding on them says anything about real skin lesions. It exists so the
whole suite (every paradigm, the runner, the report) runs and can be demonstrated with no
download.

Generative model
----------------
*Patients* get a Fitzpatrick skin type (I-VI, roughly the mix of a European clinic), a sex and a
number of images in ``images_per_patient``. A patient's images belong to one or more *lesions*;
a second image of the same lesion is often the other modality (dermoscopic and clinical views of
one lesion, as in PAD-UFES-20 or ISIC). Lesions are labelled malignant until the malignant share
of images reaches ``malignant_fraction``; the fine ``diagnosis`` (melanoma, bcc, scc / nevus,
seborrheic keratosis, solar lentigo, dermatofibroma) is drawn consistently with that label, and
patients with a malignant lesion are older on average.

Each lesion has four latent scores, one per letter of the dermatoscopic ABCD rule, each
``N(0, 1)`` for benign lesions and ``N(ABCD_SHIFT, 1)`` for malignant ones, drawn independently:

* **A**symmetry: the radius is modulated by low-frequency Fourier terms and an off-centre lobe;
* **B**order: high-frequency radial terms, per-pixel raggedness and a wider, blurred edge;
* **C**olour: 0-4 extra colour blotches (dark brown, black, blue-grey, red, regression white) on
  top of the base pigment; the more atypical colours become likelier as the score rises;
* **D**iameter: the lesion radius.

Because each score overlaps between the classes (one letter alone separates them only
moderately) while the four together separate them well, labels are learnable but not trivial: a
good model reaches a high, not perfect, AUROC (``tests/test_synth.py`` checks both bounds with
handcrafted features). The lesion is composited on a background whose tone follows the
Fitzpatrick type (so contrast is lower on darker skin, as in real photographs), with
low-frequency skin texture, optional hairs, a circular vignette and pigment network for
dermoscopic views, and a lighting gradient and slight blur for clinical ones.

Everything is drawn from ``numpy.random.default_rng`` streams derived from ``seed`` (one per
patient-level draw, lesion and image), so the same seed gives byte-identical CSVs and JPEGs
(for a given Pillow/libjpeg), hence the same dataset fingerprint.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import BENIGN, MALIGNANT, SPLITS, __version__
from ..errors import SynthError
from ..utils.console import track
from .card import CARD_NAME
from .splits import grouped_stratified_split

#: Version of the drawing code; bump it when the images a seed produces change.
GENERATOR_VERSION = 1
#: Mean of a malignant lesion's latent A, B, C and D scores (benign lesions: 0; both SD 1).
ABCD_SHIFT = 1.5
JPEG_QUALITY = 92

FITZPATRICK_TYPES = ("I", "II", "III", "IV", "V", "VI")
FITZPATRICK_WEIGHTS = (0.12, 0.28, 0.25, 0.17, 0.11, 0.07)
#: Typical skin tone (sRGB) per Fitzpatrick type; each patient is jittered around it.
SKIN_RGB = {
    "I": (242, 215, 198),
    "II": (230, 192, 165),
    "III": (210, 163, 128),
    "IV": (172, 123, 88),
    "V": (122, 83, 57),
    "VI": (78, 53, 38),
}
SITES = ("back", "trunk", "abdomen", "chest", "face", "scalp", "neck", "upper extremity",
         "lower extremity", "hand", "foot")
SITE_WEIGHTS = (0.2, 0.1, 0.08, 0.1, 0.12, 0.04, 0.05, 0.12, 0.12, 0.04, 0.03)
MODALITIES = ("dermoscopic", "clinical")

BENIGN_DIAGNOSES = {"nevus": 0.6, "seborrheic keratosis": 0.2, "solar lentigo": 0.1, "dermatofibroma": 0.1}
MALIGNANT_DIAGNOSES = {"melanoma": 0.55, "bcc": 0.3, "scc": 0.15}

#: Base pigment per diagnosis, as a multiplicative factor on the skin colour (lower = darker).
BASE_PIGMENT = {
    "nevus": (0.62, 0.48, 0.40),
    "seborrheic keratosis": (0.72, 0.60, 0.50),
    "solar lentigo": (0.80, 0.68, 0.58),
    "dermatofibroma": (0.78, 0.62, 0.56),
    "melanoma": (0.55, 0.42, 0.36),
    "bcc": (0.85, 0.66, 0.66),
    "scc": (0.82, 0.62, 0.58),
}
#: Extra colours of the C in ABCD. ``mul`` colours darken the skin; ``abs`` colours replace it.
BLOTCH_COLOURS = {
    "dark brown": ("mul", (0.36, 0.25, 0.20)),
    "black": ("abs", (32, 24, 22)),
    "blue-grey": ("abs", (96, 108, 130)),
    "red": ("abs", (186, 78, 80)),
    "regression white": ("abs", (226, 214, 210)),
}
#: Blotch colour preference for a low (typical) and a high (atypical) colour score.
_TYPICAL_COLOUR_P = np.array([0.75, 0.10, 0.05, 0.05, 0.05])
_ATYPICAL_COLOUR_P = np.array([0.20, 0.25, 0.22, 0.15, 0.18])

_MIN_IMAGES = 30


# ---------------------------------------------------------------------------------------------
# Metadata: patients, lesions, images, splits
# ---------------------------------------------------------------------------------------------

@dataclass
class _Patient:
    patient_id: str
    fitzpatrick: str
    sex: str
    skin_rgb: np.ndarray
    age: int = 0
    lesions: list[int] = field(default_factory=list)


@dataclass
class _Lesion:
    index: int
    lesion_id: str
    patient: int
    site: str
    images: list[int] = field(default_factory=list)
    label: int = 0
    diagnosis: str = ""


@dataclass
class _Image:
    index: int
    img_id: str
    lesion: int
    modality: str


def _draw_structure(n: int, seed: int, malignant_fraction: float,
                    images_per_patient: tuple[int, int]) -> tuple[list[_Patient], list[_Lesion], list[_Image]]:
    """Patients, their lesions and images, labels and diagnoses (everything but the pixels)."""
    rng = np.random.default_rng([seed, 1])
    lo, hi = images_per_patient
    patients: list[_Patient] = []
    lesions: list[_Lesion] = []
    images: list[_Image] = []
    while len(images) < n:
        p = len(patients)
        fitz = FITZPATRICK_TYPES[rng.choice(len(FITZPATRICK_TYPES), p=FITZPATRICK_WEIGHTS)]
        skin = np.array(SKIN_RGB[fitz], float) * rng.uniform(0.94, 1.06) + rng.normal(0, 4, 3)
        patient = _Patient(f"SP{p + 1:05d}", fitz, "male" if rng.random() < 0.5 else "female",
                           np.clip(skin, 20, 250))
        patients.append(patient)
        k = min(int(rng.integers(lo, hi + 1)), n - len(images))
        for j in range(k):
            # A later image is often a second view of the previous lesion, else a new lesion.
            if j == 0 or rng.random() >= 0.5:
                site = SITES[rng.choice(len(SITES), p=SITE_WEIGHTS)]
                lesion = _Lesion(len(lesions), f"SL{len(lesions) + 1:05d}", p, site)
                lesions.append(lesion)
                patient.lesions.append(lesion.index)
                modality = MODALITIES[0] if rng.random() < 0.6 else MODALITIES[1]
            else:
                lesion = lesions[-1]
                previous = images[lesion.images[-1]].modality
                flip = rng.random() < 0.7
                modality = MODALITIES[1 - MODALITIES.index(previous)] if flip else previous
            image = _Image(len(images), f"synth_{len(images) + 1:06d}.jpg", lesion.index, modality)
            lesion.images.append(image.index)
            images.append(image)

    # Malignant lesions, in random order, until the malignant share of images is reached.
    target = round(n * malignant_fraction)
    n_malignant = 0
    for li in rng.permutation(len(lesions)):
        size = len(lesions[li].images)
        if n_malignant + size <= target:
            lesions[li].label = 1
            n_malignant += size
        if n_malignant >= target:
            break
    for lesion in lesions:
        table = MALIGNANT_DIAGNOSES if lesion.label else BENIGN_DIAGNOSES
        names = list(table)
        lesion.diagnosis = names[rng.choice(len(names), p=np.array(list(table.values())))]
    for patient in patients:
        has_malignant = any(lesions[li].label for li in patient.lesions)
        mean, sd = (64.0, 13.0) if has_malignant else (46.0, 17.0)
        patient.age = int(np.clip(round(rng.normal(mean, sd)), 5, 95))
    return patients, lesions, images


def _patient_splits(patients: list[str], labels: list[int], ratios: Sequence[float], seed: int) -> dict[str, str]:
    """Patient id -> split, by the package's grouped stratified split (grouped by patient,
    stratified by label) on its own seeded stream."""
    names = grouped_stratified_split(labels, patients, ratios, seed=[seed, 2])
    return dict(zip(patients, names))


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------

@dataclass
class _Blotch:
    colour: str
    centre: tuple[float, float]  # lesion frame, in units of the lesion radius
    radius: float
    strength: float
    noise_seed: int


@dataclass
class _LesionShape:
    """Per-lesion drawing parameters, shared by every view of the lesion."""

    radius: float  # fraction of the image half-width in a dermoscopic view
    elongation: float
    harmonics_k: np.ndarray
    harmonics_amp: np.ndarray
    harmonics_phase: np.ndarray
    lobe: tuple[float, float, float, float] | None  # centre x, y, radius x, radius y (lesion units)
    edge_width: float
    ragged: float
    pigment: np.ndarray  # multiplicative factor on skin
    centre_darkening: float
    network: float
    blotches: list[_Blotch]


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _lesion_shape(lesion: _Lesion, seed: int) -> _LesionShape:
    """Map the lesion's latent ABCD scores to drawing parameters (see the module docstring)."""
    rng = np.random.default_rng([seed, 3, lesion.index])
    z_a, z_b, z_c, z_d = rng.normal(ABCD_SHIFT * lesion.label, 1.0, 4)
    u_a, u_b, u_c, u_d = (_sigmoid(z - ABCD_SHIFT / 2) for z in (z_a, z_b, z_c, z_d))

    # A: low-frequency radius modulation (k = 1..3) and, when asymmetric, an off-centre lobe.
    low_k = np.arange(1, 4)
    low_amp = (0.02 + 0.16 * u_a) * np.abs(rng.normal(1.0, 0.35, 3)) / low_k
    lobe = None
    if rng.random() < 0.1 + 0.7 * u_a:
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.45, 0.8)
        lobe = (dist * math.cos(ang), dist * math.sin(ang), rng.uniform(0.35, 0.6), rng.uniform(0.3, 0.55))
    # B: high-frequency radius modulation (k = 5..16), per-pixel raggedness, blurred edge.
    high_k = np.arange(5, 17)
    high_amp = (0.004 + 0.05 * u_b) * np.abs(rng.normal(1.0, 0.5, high_k.size)) / np.sqrt(high_k / 5)
    k = np.concatenate([low_k, high_k])
    amp = np.concatenate([low_amp, high_amp])
    phase = rng.uniform(0, 2 * np.pi, k.size)
    edge_width = 0.03 + 0.22 * u_b * rng.uniform(0.6, 1.4)
    ragged = 0.01 + 0.12 * u_b
    # C: base pigment (by diagnosis) plus 0-4 extra colour blotches.
    pigment = np.array(BASE_PIGMENT[lesion.diagnosis]) * rng.uniform(0.9, 1.1) + rng.normal(0, 0.03, 3)
    n_extra = int(np.clip(math.floor(4.6 * u_c + rng.uniform(-0.6, 0.6)), 0, 4))
    colour_p = (1 - u_c) * _TYPICAL_COLOUR_P + u_c * _ATYPICAL_COLOUR_P
    names = list(BLOTCH_COLOURS)
    chosen = rng.choice(len(names), size=n_extra, replace=False, p=colour_p / colour_p.sum())
    blotches = []
    for ci in chosen:
        r0, ang = 0.6 * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        blotches.append(_Blotch(names[ci], (r0 * math.cos(ang), r0 * math.sin(ang)),
                                rng.uniform(0.22, 0.5), rng.uniform(0.55, 0.9), int(rng.integers(2**31))))
    # D: diameter.
    radius = (0.2 + 0.42 * u_d) * rng.uniform(0.85, 1.15)
    return _LesionShape(
        radius=float(radius),
        elongation=float(rng.uniform(0.75, 1.0)),
        harmonics_k=k, harmonics_amp=amp, harmonics_phase=phase,
        lobe=lobe,
        edge_width=float(edge_width),
        ragged=float(ragged),
        pigment=np.clip(pigment, 0.2, 0.95),
        centre_darkening=float(rng.uniform(0.0, 0.35)),
        network=float(rng.uniform(0.03, 0.12)),
        blotches=blotches,
    )


class _Canvas:
    """Pixel grids and noise interpolation tables for one image size (built once)."""

    def __init__(self, size: int):
        self.size = size
        axis = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)
        self.x, self.y = np.meshgrid(axis, axis)
        self.flat = np.stack([self.x.ravel(), self.y.ravel()], axis=1)
        self._interp: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def noise(self, rng: np.random.Generator, grid: int) -> np.ndarray:
        """Smooth value noise (about unit variance) with ``grid`` cells across the image."""
        if grid not in self._interp:
            pos = np.linspace(0, grid, self.size)
            i0 = np.minimum(np.floor(pos).astype(int), grid - 1)
            f = pos - i0
            self._interp[grid] = (i0, (f * f * (3 - 2 * f)).astype(np.float32))
        i0, f = self._interp[grid]
        g = rng.standard_normal((grid + 1, grid + 1), dtype=np.float32)
        rows = g[i0] * (1 - f)[:, None] + g[i0 + 1] * f[:, None]
        return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _hair_alpha(canvas: _Canvas, rng: np.random.Generator, n_hairs: int) -> np.ndarray:
    """Coverage of ``n_hairs`` thin curved hairs.

    Each hair is a parabola ``v = c2 u^2 + c1 u + c0`` in a randomly rotated frame, cut to an
    interval of ``u``; the distance to it is approximated by ``|v - f(u)| / sqrt(1 + f'(u)^2)``,
    which is exact enough for a hair a pixel or two wide and costs a few array passes.
    """
    alpha = np.zeros((canvas.size, canvas.size), np.float32)
    for _ in range(n_hairs):
        ang = rng.uniform(0, np.pi)
        ca, sa = math.cos(ang), math.sin(ang)
        u = ca * canvas.x + sa * canvas.y
        v = -sa * canvas.x + ca * canvas.y
        c2, c1, c0 = rng.normal(0, 0.25), rng.normal(0, 0.15), rng.uniform(-1.1, 1.1)
        u0 = rng.uniform(-1.6, 0.4)
        u1 = u0 + rng.uniform(0.6, 2.2)
        dist = np.abs(v - (c2 * u + c1) * u - c0) / np.sqrt(1 + (2 * c2 * u + c1) ** 2)
        # Half-width as a fraction of the image half-width (a hair stays thin at any resolution),
        # but never under a third of a pixel so it still shows, anti-aliased, at 64 px.
        width = max(rng.uniform(0.005, 0.012), 0.66 / canvas.size)
        cover = _smoothstep(1.0 - (dist - width) / (1.0 / canvas.size)) * ((u > u0) & (u < u1))
        alpha = np.maximum(alpha, cover * rng.uniform(0.6, 0.95))
    return alpha


def _render(canvas: _Canvas, shape: _LesionShape, skin_rgb: np.ndarray, modality: str,
            n_hairs: int, hair_rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one view of a lesion; returns an (H, W, 3) uint8 array.

    Pixel arithmetic is float32 (half the memory traffic of float64), so every small array
    that multiplies an image is cast to float32 first.
    """
    f32 = np.float32
    skin_rgb = skin_rgb.astype(f32)
    size = canvas.size
    dermoscopic = modality == "dermoscopic"
    # View transform: rotation, small offset, zoom (clinical photographs are taken from further away).
    angle = rng.uniform(0, 2 * np.pi)
    zoom = rng.uniform(0.9, 1.1) if dermoscopic else rng.uniform(0.7, 0.85)
    cx, cy = (float(c) for c in rng.normal(0, 0.06, 2))
    ca, sa = math.cos(angle), math.sin(angle)
    dx, dy = canvas.x - cx, canvas.y - cy
    scale = shape.radius * zoom
    u = (ca * dx + sa * dy) / scale
    v = (-sa * dx + ca * dy) / (scale * shape.elongation)

    # Radius modulation 1 + sum_k a_k cos(k theta + phi_k), with e^{ik theta} as powers of
    # e^{i theta} (far cheaper than one cos per harmonic and pixel).
    dist = np.hypot(u, v)
    e_theta = (u + 1j * v) / np.maximum(dist, 1e-9)
    coef = (shape.harmonics_amp * np.exp(1j * shape.harmonics_phase)).astype(np.complex64)
    by_k = dict(zip(shape.harmonics_k.tolist(), coef))
    power = np.ones_like(e_theta)
    series = np.zeros_like(e_theta)
    for k in range(1, max(by_k) + 1):
        power = power * e_theta
        if k in by_k:
            series += by_k[k] * power
    rho = dist / np.maximum(1.0 + series.real, 0.3)
    if shape.lobe is not None:
        lx, ly, rx, ry = shape.lobe
        rho = np.minimum(rho, np.hypot((u - lx) / rx, (v - ly) / ry) * 0.999 + 0.001)
    rho = rho + shape.ragged * canvas.noise(rng, max(8, size // 6))
    edge = shape.edge_width * (1.0 if dermoscopic else 1.6)
    alpha = _smoothstep(0.5 + (1.0 - rho) / edge)

    # Skin: tone, low-frequency blotchiness, fine texture.
    skin = skin_rgb[None, None, :] * (1 + 0.045 * canvas.noise(rng, 3)[..., None])
    skin = skin * (1 + 0.025 * canvas.noise(rng, max(8, size // 4))[..., None])

    # Lesion colour: base pigment, darker centre, pigment network in dermoscopy, blotches.
    inside = np.clip(1.0 - rho, 0.0, 1.0)
    factor = shape.pigment.astype(f32)[None, None, :] * (1 - shape.centre_darkening * inside)[..., None]
    factor = factor * (1 + 0.07 * canvas.noise(rng, max(6, size // 10)))[..., None]
    if dermoscopic:
        freq = rng.uniform(9, 14)
        net = np.cos(freq * u + 1.5 * canvas.noise(rng, 6)) * np.cos(freq * v)
        factor = factor * (1 - shape.network * (net > 0.3).astype(f32))[..., None]
    lesion = skin * factor
    for blotch in shape.blotches:
        brng = np.random.default_rng(blotch.noise_seed)
        bx, by = blotch.centre
        ba = brng.uniform(0, np.pi)
        bu = (math.cos(ba) * (u - bx) + math.sin(ba) * (v - by)) / blotch.radius
        bv = (-math.sin(ba) * (u - bx) + math.cos(ba) * (v - by)) / (blotch.radius * brng.uniform(0.45, 1.0))
        b_alpha = _smoothstep((1.0 - np.hypot(bu, bv) + 0.6 * canvas.noise(brng, 9)) / 0.5)
        b_alpha = b_alpha * blotch.strength * _smoothstep((1.0 - rho) / 0.25)
        kind, value = BLOTCH_COLOURS[blotch.colour]
        target = skin * np.array(value, f32) if kind == "mul" else np.array(value, f32)
        lesion = lesion * (1 - b_alpha[..., None]) + target * b_alpha[..., None]

    img = skin * (1 - alpha[..., None]) + lesion * alpha[..., None]
    if n_hairs:
        h_alpha = _hair_alpha(canvas, rng, n_hairs)[..., None]
        img = img * (1 - h_alpha) + hair_rgb.astype(f32) * h_alpha
    r2 = canvas.x ** 2 + canvas.y ** 2
    if dermoscopic:
        # Dermatoscope: brighter, even light inside a circular field of view, dark corners.
        fov = rng.uniform(1.2, 1.4)
        img = img * (1.04 - 0.12 * r2 / fov ** 2)[..., None] * _smoothstep((fov - np.sqrt(r2)) / 0.08)[..., None]
    else:
        ga = rng.uniform(0, 2 * np.pi)
        img = img * (1 + rng.uniform(0.04, 0.12) * (math.cos(ga) * canvas.x + math.sin(ga) * canvas.y))[..., None]
    img = img + 2.0 * rng.standard_normal(img.shape, dtype=f32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _hair_count(rng: np.random.Generator, patient: _Patient, lesion: _Lesion) -> int:
    rate = {"scalp": 6.0, "face": 1.0, "lower extremity": 2.0, "upper extremity": 2.0}.get(lesion.site, 0.8)
    if patient.sex == "male":
        rate *= 1.6
    return int(min(rng.poisson(rate), 12))


def _save_jpeg(arr: np.ndarray, path: Path, blur: float) -> None:
    from PIL import Image, ImageFilter

    img = Image.fromarray(arr, mode="RGB")
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    img.save(path, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------

def _check_args(n: int, size: int, malignant_fraction: float, ratios: Sequence[float],
                images_per_patient: tuple[int, int]) -> tuple[float, float, float]:
    if int(n) != n or n < _MIN_IMAGES:
        raise SynthError(f"n={n!r}: a synthetic dataset needs at least {_MIN_IMAGES} images so every "
                         f"split can hold both labels")
    if int(size) != size or not 32 <= size <= 2048:
        raise SynthError(f"size={size!r}: image side must be an integer pixel count in 32..2048")
    if not 0.05 <= malignant_fraction <= 0.95:
        raise SynthError(f"malignant_fraction={malignant_fraction!r}: must be in [0.05, 0.95]")
    if len(ratios) != 3 or any(not r > 0 for r in ratios):
        raise SynthError(f"ratios={tuple(ratios)!r}: need three positive shares for "
                         f"{', '.join(SPLITS)} (e.g. 0.7, 0.15, 0.15)")
    total = float(sum(ratios))
    if abs(total - 1.0) > 1e-6:
        raise SynthError(f"ratios={tuple(ratios)!r} sum to {total:g}; they must sum to 1")
    lo, hi = images_per_patient
    if not (int(lo) == lo and int(hi) == hi and 1 <= lo <= hi <= 20):
        raise SynthError(f"images_per_patient={images_per_patient!r}: need (min, max) with 1 <= min <= max <= 20")
    return tuple(float(r) for r in ratios)  # type: ignore[return-value]


def _looks_like_dataset(folder: Path) -> bool:
    return (folder / CARD_NAME).exists() or any((folder / f"{s}_metadata.csv").exists() for s in SPLITS)


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"{out} already exists and is not empty; pass overwrite=True "
                             f"(`dermbench synth --overwrite`) to replace it, or choose another folder")
        if not _looks_like_dataset(out):
            raise SynthError(f"refusing to replace {out}: it is not empty and does not look like a "
                             f"dataset (no dataset.json or *_metadata.csv); remove it yourself or "
                             f"choose another folder")


def make_synthetic_dataset(
    out: str | Path,
    *,
    n: int = 600,
    size: int = 128,
    seed: int = 0,
    malignant_fraction: float = 0.35,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    images_per_patient: tuple[int, int] = (1, 3),
    overwrite: bool = False,
    progress: bool = True,
    modality: str = "mixed",
) -> Path:
    """Draw a seeded ABCD-rule lesion dataset into ``out`` (contract layout + ``dataset.json``).

    The dataset is written into a hidden sibling folder and renamed to ``out`` only when it is
    complete, so an interrupted run never leaves a folder that looks like a finished dataset.
    ``overwrite`` replaces an existing dataset folder (one with a card or split CSVs); any
    other non-empty folder is refused. ``modality`` ``dermoscopic`` or ``clinical`` renders every
    image in that modality (the same patients, lesions, labels and splits as ``mixed``, the default,
    which draws both; a transfer demo trains on one and tests on the other). Returns the dataset folder.
    """
    from .contract import write_card
    from .writer import move_into_place

    ratios = _check_args(n, size, malignant_fraction, ratios, images_per_patient)
    n, size = int(n), int(size)
    images_per_patient = (int(images_per_patient[0]), int(images_per_patient[1]))
    out = Path(out).expanduser().absolute()
    _prepare_output(out, overwrite)

    if modality not in ("mixed", *MODALITIES):
        raise SynthError(f"modality must be mixed, {' or '.join(MODALITIES)}; got {modality!r}")
    patients, lesions, images = _draw_structure(n, seed, malignant_fraction, images_per_patient)
    if modality != "mixed":  # after the structure is drawn: its random streams stay those of `mixed`
        for im in images:
            im.modality = modality
    assignment = _assign_splits(patients, lesions, images, ratios, seed,
                                f"with n={n}, ratios={ratios} and malignant_fraction={malignant_fraction}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    try:
        _draw_images(tmp / "images", patients, lesions, images, size, seed, desc=f"synth {out.name}",
                     progress=progress)
        _write_metadata(tmp, patients, lesions, images, assignment)
        label_mapping = {d: BENIGN for d in BENIGN_DIAGNOSES} | {d: MALIGNANT for d in MALIGNANT_DIAGNOSES}
        write_card(
            tmp,
            name=out.name,
            source="synthetic",
            licence="CC0-1.0 (generated)",
            label_mapping={"column": "diagnosis", "mapping": label_mapping},
            split_policy={"method": "grouped_stratified", "group": "patient_id",
                          "stratify": "benign_malignant", "ratios": dict(zip(SPLITS, ratios)), "seed": seed},
            premalignant_policy="n/a",
            label_definition="synthetic",
            label_definition_note="labels drawn by the generator (ABCD rule), not from a diagnosis",
            split_grouping="grouped",
            excluded=[],  # the generator writes every image it lists: nothing excluded (not "unknown")
            rows_read=n,
            generator={"name": "dermbench.data.synth", "version": GENERATOR_VERSION, "seed": seed,
                       "n": n, "size": size, "malignant_fraction": malignant_fraction,
                       "images_per_patient": list(images_per_patient), "abcd_shift": ABCD_SHIFT,
                       "dermbench_version": __version__, **({"modality": modality} if modality != "mixed" else {})},
            **({"modality": modality} if modality != "mixed" else {}),
            note="Synthetic demo/test data drawn by the ABCD rule; not a medical result.",
        )
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _assign_splits(patients: list[_Patient], lesions: list[_Lesion], images: list[_Image], ratios: Sequence[float],
                   seed: int, settings: str) -> dict[str, str]:
    """Patient id -> split; every split must hold both labels (``settings`` says what to change)."""
    image_patient = [patients[lesions[im.lesion].patient].patient_id for im in images]
    image_label = [lesions[im.lesion].label for im in images]
    assignment = _patient_splits(image_patient, image_label, ratios, seed)
    for split in SPLITS:
        labels = {y for pid, y in zip(image_patient, image_label) if assignment[pid] == split}
        if labels != {0, 1}:
            raise SynthError(f"{settings} the {split} split gets no "
                             f"{'malignant' if 1 not in labels else 'benign'} image; raise n or the {split} ratio")
    return assignment


def _draw_images(folder: Path, patients: list[_Patient], lesions: list[_Lesion], images: list[_Image], size: int,
                 seed: int, *, desc: str, progress: bool) -> None:
    """Render every image (each from its own seeded stream) as a JPEG in ``folder``."""
    shapes = [_lesion_shape(lesion, seed) for lesion in lesions]
    canvas = _Canvas(size)
    for im in track(images, desc, enabled=progress):
        lesion = lesions[im.lesion]
        patient = patients[lesion.patient]
        rng = np.random.default_rng([seed, 4, im.index])
        hair_rgb = np.clip(patient.skin_rgb * 0.25 + rng.normal(0, 5, 3), 5, 120)
        arr = _render(canvas, shapes[im.lesion], patient.skin_rgb, im.modality,
                      _hair_count(rng, patient, lesion), hair_rgb, rng)
        blur = 0.0 if im.modality == "dermoscopic" else float(rng.uniform(0.3, 0.8)) * size / 128
        _save_jpeg(arr, folder / im.img_id, blur)


def _write_metadata(folder: Path, patients: list[_Patient], lesions: list[_Lesion], images: list[_Image],
                    assignment: dict[str, str]) -> None:
    """The three split CSVs, rows sorted by img_id."""
    import pandas as pd

    rows = []
    for im in images:
        lesion = lesions[im.lesion]
        patient = patients[lesion.patient]
        rows.append({
            "img_id": im.img_id,
            "benign_malignant": MALIGNANT if lesion.label else BENIGN,
            "patient_id": patient.patient_id,
            "lesion_id": lesion.lesion_id,
            "fitzpatrick": patient.fitzpatrick,
            "age": patient.age,
            "sex": patient.sex,
            "site": lesion.site,
            "modality": im.modality,
            "diagnosis": lesion.diagnosis,
            "split": assignment[patient.patient_id],
        })
    table = pd.DataFrame(rows)
    for split in SPLITS:
        part = table[table["split"] == split].drop(columns=["split"]).sort_values("img_id")
        part.to_csv(folder / f"{split}_metadata.csv", index=False, lineterminator="\n")
