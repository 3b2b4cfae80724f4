"""A synthetic dataset in the project's format: 6 classes of coloured shapes, plus near-duplicates.

    python -c "from pokemon_classifier.synthetic import make_dataset; make_dataset('demo_data')"

Used by the tests and by train.ipynb when the real images are absent: everything runs end to end
on it in seconds, and a model learns it well above chance in a few epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# 6 classes, each a distinct shape and colour (dex id -> (shape, rgb))
CLASSES = {1: ("circle", (40, 160, 60)), 4: ("square", (230, 90, 30)), 7: ("triangle", (40, 90, 220)),
           25: ("diamond", (240, 210, 30)), 63: ("cross", (150, 60, 160)), 151: ("ring", (240, 120, 180))}


def draw_shape(shape: str, color, size: int = 96, rng=None, clutter: bool = True) -> Image.Image:
    rng = rng or np.random.default_rng(0)
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = int(size * rng.uniform(0.25, 0.4))
    cx, cy = (int(size / 2 + rng.uniform(-0.1, 0.1) * size) for _ in range(2))
    col = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in color)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=col)
    elif shape == "square":
        d.rectangle(box, fill=col)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx - r, cy), (cx, cy + r), (cx + r, cy)], fill=col)
    elif shape == "cross":
        w = r // 3
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=col)
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=col)
    else:
        d.ellipse(box, outline=col, width=max(3, r // 3))
    # random dark blobs: every image gets its own low-frequency layout, so pHashes differ
    for _ in range(4 if clutter else 0):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        s = int(rng.integers(size // 10, size // 6))
        d.ellipse((x, y, x + s, y + s), fill=tuple(int(v) for v in rng.integers(120, 190, 1)) * 3)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_dataset(root: Path, per_class: int = 12, dups: int = 2, seed: int = 0, size: int = 96,
                 clutter: bool = True) -> Path:
    """root/images/<name><NNN>.jpg + annotations.csv; `dups` near-duplicates per class (resized, re-encoded)."""
    from pokemon_classifier import pokedex

    root = Path(root)
    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for dex, (shape, color) in CLASSES.items():
        name = pokedex.name(dex)
        for k in range(1, per_class + 1):
            img = draw_shape(shape, color, size, rng, clutter)
            fn = f"{name}{k:03d}.jpg"
            img.save(img_dir / fn, quality=92)
            rows.append((fn, dex))
        for j in range(dups):  # near-duplicates of image j+1: resized and re-encoded
            src = Image.open(img_dir / f"{name}{j + 1:03d}.jpg")
            fn = f"{name}{per_class + j + 1:03d}.jpg"
            src.resize((size + 40, size + 40)).save(img_dir / fn, quality=70)
            rows.append((fn, dex))
    lines = ["img_name,pokemon_id"] + [f"{f},{d}" for f, d in sorted(rows)]
    (root / "annotations.csv").write_text("\n".join(lines) + "\n")
    return root
