"""Style renditions of a picture: the same Pokemon drawn as a Game Boy sprite, pixel art, a menu icon or flat art.

    python tools/make_styles.py --data data/pokemon --splits runs/splits_final.csv --split test --out styles/
    pokemon-classifier evaluate --weights best.pt --data data/pokemon --split test --styles styles/
    pokemon-classifier calibrate --weights best.pt --data data/ --negatives negatives/ --style-positives all

A new drawing style of the 151 (covariate shift) must be accepted by the open-set score while a new
species (semantic shift) is turned away (Yang et al., "Full-Spectrum Out-of-Distribution Detection",
IJCV 2023). These renditions make such styles from any labelled picture, deterministically given a
seed, for three jobs: the `styles` section of `evaluate`, the leave-one-style-out protocol of
tools/styles_cv.py, and the style-augmented positives of the outlier-exposure head
(`calibrate --style-positives`). Every rendition keeps the input's size (the low resolution is in
the blocky pixels, nearest-neighbour upscaled, as a sprite looks in an app).
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image, ImageFilter, ImageOps

STYLE_KINDS = ("gameboy", "pixel", "icon", "flat")
# The original Game Boy's four shades of green, darkest first
GAMEBOY_PALETTE = ((15, 56, 15), (48, 98, 48), (139, 172, 15), (155, 188, 15))
OUTLINE = (24, 24, 32)


def _foreground(img: Image.Image) -> np.ndarray:
    """A boolean mask of the subject: pixels far from the border's median colour (sprites and
    artwork sit on a plain background; on a photo it is a rough guess, which is fine for a style)."""
    a = np.asarray(img, dtype=np.int16)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bg = np.median(border, axis=0)
    return np.abs(a - bg).sum(-1) > 48


def _outline(img: Image.Image, mask: np.ndarray, color=OUTLINE) -> Image.Image:
    """A one-pixel dark line around the subject (the pixels just outside the mask)."""
    m = Image.fromarray(mask.astype(np.uint8) * 255)
    ring = (np.asarray(m.filter(ImageFilter.MaxFilter(3))) > 0) & ~mask
    a = np.asarray(img).copy()
    a[ring] = color
    return Image.fromarray(a)


def _small(img: Image.Image, side: int) -> Image.Image:
    """Downscale so that the longer side is `side` pixels (box filter: the average of each block)."""
    w, h = img.size
    s = side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BOX)


def _palette(img: Image.Image, colors) -> Image.Image:
    """Map every pixel to the nearest of `colors` (no dithering: flat areas, as on a sprite)."""
    pal = Image.new("P", (1, 1))
    flat = [c for rgb in colors for c in rgb]
    pal.putpalette(flat + flat[:3] * (256 - len(colors)))
    return img.quantize(palette=pal, dither=Image.Dither.NONE).convert("RGB")


def gameboy(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A Game Boy sprite: 32-64 px, four shades of green by brightness, nearest upscale."""
    small = _small(img, int(rng.integers(32, 65)))
    gray = np.asarray(ImageOps.autocontrast(small.convert("L")), dtype=np.float64)
    level = np.clip((gray / 256 * 4).astype(int), 0, 3)
    out = np.asarray(GAMEBOY_PALETTE, dtype=np.uint8)[level]
    return Image.fromarray(out).resize(img.size, Image.Resampling.NEAREST)


def pixel(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Pixel art: 32-64 px with a palette of 2-16 colours taken from the picture, nearest upscale."""
    small = _small(img, int(rng.integers(32, 65)))
    k = int(rng.integers(2, 17))
    q = small.quantize(colors=k, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB")
    return q.resize(img.size, Image.Resampling.NEAREST)


def icon(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A menu icon: the subject shrunk to 24-32 px with 16 colours and a dark outline, on a plain
    light background (a 32-40 px canvas), nearest upscale."""
    side = int(rng.integers(24, 33))
    small = _small(img, side).quantize(colors=16, dither=Image.Dither.NONE).convert("RGB")
    mask = _foreground(small)
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    canvas_side = side + int(rng.integers(4, 9))
    w, h = img.size
    cw, ch = max(canvas_side * w // max(w, h), small.width + 2), max(canvas_side * h // max(w, h), small.height + 2)
    canvas = Image.new("RGB", (cw, ch), bg)
    x, y = (cw - small.width) // 2, (ch - small.height) // 2
    canvas.paste(small, (x, y), Image.fromarray(mask.astype(np.uint8) * 255))
    full = np.zeros((ch, cw), bool)
    full[y: y + small.height, x: x + small.width] = mask
    return _outline(canvas, full).resize(img.size, Image.Resampling.NEAREST)


def flat(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Flat shading: smoothed, posterised to 2-3 bits a channel, with dark outlines on the edges."""
    smooth = img.filter(ImageFilter.ModeFilter(int(rng.choice([3, 5]))))
    poster = ImageOps.posterize(smooth, int(rng.integers(2, 4)))
    edges = np.asarray(poster.convert("L").filter(ImageFilter.FIND_EDGES)) > 40
    a = np.asarray(poster).copy()
    a[edges] = OUTLINE
    return Image.fromarray(a)


RENDER = {"gameboy": gameboy, "pixel": pixel, "icon": icon, "flat": flat}


def seed_for(name: str, kind: str, seed: int = 0) -> int:
    """A stable per-picture seed (the same on every machine and Python run; hash() is salted)."""
    return zlib.crc32(f"{seed}:{kind}:{name}".encode())


def render(img: Image.Image, kind: str, seed: int = 0) -> Image.Image:
    """`img` (any PIL image) in style `kind` (STYLE_KINDS); the same seed gives the same picture."""
    if kind not in RENDER:
        raise ValueError(f"unknown style {kind!r} (choose from {', '.join(STYLE_KINDS)})")
    return RENDER[kind](img.convert("RGB"), np.random.default_rng(seed))


def parse_kinds(spec: str, what: str = "--style-positives") -> list[str]:
    """'all', 'none' or comma-separated STYLE_KINDS -> the list of kinds; a UserError names a bad one."""
    from pokemon_classifier.errors import UserError

    spec = spec.strip()
    if spec == "all":
        return list(STYLE_KINDS)
    if spec in ("", "none"):
        return []
    kinds = [k.strip() for k in spec.split(",")]
    bad = [k for k in kinds if k not in STYLE_KINDS]
    if bad:
        raise UserError(f"{what} {spec}: unknown style {bad[0]!r} (choose from all, none, {', '.join(STYLE_KINDS)})")
    return list(dict.fromkeys(kinds))


def round_robin(names, kinds, seed: int = 0) -> list[tuple[str, str, int]]:
    """(name, kind, seed) giving every picture one style, the kinds in turn: each style gets a
    share of the pictures at the price of one extra picture each (calibrate, styles_cv)."""
    return [(n, kinds[i % len(kinds)], seed_for(n, kinds[i % len(kinds)], seed)) for i, n in enumerate(names)] if kinds else []
