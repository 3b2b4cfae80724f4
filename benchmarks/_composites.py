"""Test pictures pasted onto background photos, with their boxes: the pictures benchmarks/explain.py
and benchmarks/multi.py measure on (fixed seeds; nothing of them is written to disk).

Pokemon pictures come from the test split only; backgrounds are the negatives' photos the checkpoint's
open-set score was not tuned on (the reporting half, by content hash, as `evaluate --negatives` picks).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from pokemon_classifier.images import load_image


def test_pictures(data_dir, splits) -> list[tuple[Path, int]]:
    """(path, dex id) of the test split's pictures."""
    from pokemon_classifier.evaluate import select

    df = select(data_dir, splits, "test")
    return [(Path(data_dir) / "images" / n, int(d)) for n, d in zip(df["img_name"], df["pokemon_id"])]


def background_photos(negatives_dir, clf) -> list[Path]:
    """The negatives of kind 'photo' that the checkpoint's open-set score was not tuned on."""
    from pokemon_classifier import openset

    table = openset.read_negatives(negatives_dir)
    tuned = set((clf.open_set or {}).get("tuned_on", []))
    keep = [p for p, k in zip(table["path"], table["kind"]) if k == "photo" and openset.file_key(p) not in tuned]
    if not keep:
        raise SystemExit(f"{negatives_dir}: no reporting photos")
    return keep


def fit_background(path, w: int, h: int, rng) -> Image.Image:
    """A random w x h crop of the photo scaled to cover w x h."""
    bg = load_image(path)
    k = max(w / bg.width, h / bg.height) * rng.uniform(1.0, 1.3)
    bg = bg.resize((max(w, round(bg.width * k)), max(h, round(bg.height * k))), Image.Resampling.BICUBIC)
    x, y = int(rng.integers(0, bg.width - w + 1)), int(rng.integers(0, bg.height - h + 1))
    return bg.crop((x, y, x + w, y + h))


def paste(canvas: Image.Image, pic: Image.Image, long_side: int, boxes: list, rng, tries: int = 200):
    """Paste `pic` scaled to long_side at a random place not overlapping `boxes`; its box, or None."""
    k = long_side / max(pic.size)
    pw, ph = max(8, round(pic.width * k)), max(8, round(pic.height * k))
    if pw > canvas.width or ph > canvas.height:
        return None
    for _ in range(tries):
        x, y = int(rng.integers(0, canvas.width - pw + 1)), int(rng.integers(0, canvas.height - ph + 1))
        b = (x, y, x + pw, y + ph)
        if all(b[2] <= o[0] or o[2] <= b[0] or b[3] <= o[1] or o[3] <= b[1] for o in boxes):
            canvas.paste(pic.resize((pw, ph), Image.Resampling.BICUBIC), (x, y))
            return b
    return None


def single(rng, pictures, photos, size: int = 448, scale=(0.35, 0.7)):
    """One test picture on a square photo: (image, box, dex id)."""
    path, dex = pictures[int(rng.integers(len(pictures)))]
    canvas = fit_background(photos[int(rng.integers(len(photos)))], size, size, rng)
    box = paste(canvas, load_image(path), round(size * rng.uniform(*scale)), [], rng)
    return canvas, box, dex


def several(rng, pictures, photos, n: int, shapes=((640, 480), (480, 640), (560, 560)), scale=(0.28, 0.45)):
    """n distinct-species test pictures on a photo, not overlapping: (image, boxes, dex ids)."""
    w, h = shapes[int(rng.integers(len(shapes)))]
    canvas = fit_background(photos[int(rng.integers(len(photos)))], w, h, rng)
    boxes, dexes = [], []
    for i in rng.permutation(len(pictures)):
        path, dex = pictures[int(i)]
        if dex in dexes:
            continue
        b = paste(canvas, load_image(path), round(min(w, h) * rng.uniform(*scale)), boxes, rng)
        if b:
            boxes.append(b)
            dexes.append(dex)
        if len(boxes) == n:
            break
    return canvas, boxes, dexes


def add_arguments(ap) -> None:
    """The flags both composite benchmarks (explain.py, multi.py) take."""
    ap.add_argument("--data", default="data/pokemon")
    ap.add_argument("--splits", default="runs/splits_final.csv")
    ap.add_argument("--negatives", default="../shared/data/negatives")
    ap.add_argument("--weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
