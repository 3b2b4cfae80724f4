"""Generated degenerate pictures: what a user points the app at first (a blank page, a shopping list,
a webcam's test pattern), which must come back unknown. calibrate fits on seed 1, evaluate reports on
seed 2, so the two sets never overlap.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DEGENERATE_KINDS = ("blank", "solid", "noise", "gradient", "text", "test-pattern", "checkerboard", "stripes",
                    "extreme-crop", "blur-noise")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def degenerate_image(kind: str, rng: np.random.Generator, size: int = 256) -> Image.Image:
    """One generated picture of `kind` (see DEGENERATE_KINDS): things a user points the app at
    first (a blank page, a shopping list, the webcam's test pattern) that must come back unknown."""
    w = h = size
    if kind == "blank":
        v = int(rng.choice([255, 250, 0, 128, 240]))
        return Image.new("RGB", (w, h), (v, v, v))
    if kind == "solid":
        return Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    if kind == "noise":
        if rng.random() < 0.5:
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            a = np.clip(rng.normal(128, rng.uniform(20, 80), (h, w, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(a)
    if kind == "blur-noise":
        a = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        return Image.fromarray(a).resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))
    if kind == "gradient":
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        if rng.random() < 0.5:
            ang = rng.uniform(0, math.pi)
            t = (xx * math.cos(ang) + yy * math.sin(ang))
        else:
            t = np.hypot(xx - rng.uniform(0.2, 0.8), yy - rng.uniform(0.2, 0.8))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        a = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.uint8)
        return Image.fromarray(a)
    if kind == "text":
        bg = tuple(int(v) for v in rng.integers(225, 256, 3))
        img = Image.new("RGB", (w, h), bg)
        d = ImageDraw.Draw(img)
        words = ["milk", "eggs", "bread", "apples", "coffee", "rice", "butter", "tea", "soap", "cheese", "TODO",
                 "meeting 10:30", "call mum", "pay rent", "Invoice #4471", "total 23.90", "Dear Sir,", "lorem ipsum"]
        y = int(rng.integers(4, 20))
        fsize = int(rng.integers(12, 30))
        while y < h - fsize:
            line = " ".join(rng.choice(words, int(rng.integers(1, 4))))
            d.text((int(rng.integers(4, 30)), y), line, fill=tuple(int(v) for v in rng.integers(0, 90, 3)),
                   font=_font(fsize))
            y += int(fsize * rng.uniform(1.2, 1.8))
        return img
    if kind == "test-pattern":
        img = Image.new("RGB", (w, h))
        d = ImageDraw.Draw(img)
        if rng.random() < 0.5:  # SMPTE-like colour bars
            bars = [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0), (192, 0, 192), (192, 0, 0), (0, 0, 192)]
            bw = w / len(bars)
            for i, c in enumerate(bars):
                d.rectangle([int(i * bw), 0, int((i + 1) * bw), int(h * 0.7)], fill=c)
            for i in range(4):
                v = int(i * 255 / 3)
                d.rectangle([int(i * w / 4), int(h * 0.7), int((i + 1) * w / 4), h], fill=(v, v, v))
        else:  # a webcam test pattern: green field, a moving pie, a frame counter
            img.paste((0, int(rng.integers(100, 200)), 0), (0, 0, w, h))
            start = float(rng.uniform(0, 360))
            d.pieslice([w * 0.25, h * 0.25, w * 0.75, h * 0.75], start, start + 300, fill=(255, 255, 255))
            d.text((8, 8), f"{int(rng.integers(0, 99999))} ms", fill=(255, 255, 255), font=_font(16))
        return img
    if kind == "checkerboard":
        n = int(rng.integers(2, 16))
        c0, c1 = (tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2))
        if rng.random() < 0.5:
            c0, c1 = (0, 0, 0), (255, 255, 255)
        yy, xx = np.mgrid[0:h, 0:w]
        m = ((xx * n // w + yy * n // h) % 2).astype(bool)
        a = np.where(m[..., None], np.array(c0, np.uint8), np.array(c1, np.uint8))
        return Image.fromarray(a.astype(np.uint8))
    if kind == "stripes":
        n = int(rng.integers(3, 30))
        yy, xx = np.mgrid[0:h, 0:w]
        axis = xx if rng.random() < 0.5 else yy
        m = (axis * n // w) % 2
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        return Image.fromarray(np.where(m[..., None] == 1, c0, c1).astype(np.uint8))
    if kind == "extreme-crop":
        # a few pixels of a smooth random picture blown up: what a badly framed webcam shows
        a = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        return Image.fromarray(a).resize((w, h), Image.BILINEAR)
    raise ValueError(f"unknown degenerate kind {kind!r}")


def degenerate_set(n_per_kind: int = 10, seed: int = 0, size: int = 256) -> tuple[list[Image.Image], list[str]]:
    """`n_per_kind` pictures of every kind in DEGENERATE_KINDS; different seeds give disjoint sets."""
    rng = np.random.default_rng(seed)
    images, kinds = [], []
    for kind in DEGENERATE_KINDS:
        for _ in range(n_per_kind):
            images.append(degenerate_image(kind, rng, size))
            kinds.append(kind)
    return images, kinds
