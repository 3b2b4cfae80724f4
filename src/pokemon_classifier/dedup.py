"""Group near-duplicate images by perceptual hash (whole image and content box).

    pokemon-classifier dedup data/
    pokemon-classifier dedup data/ --threshold 6 --out reports/

Writes dedup.csv (img_name, group, pokemon_id, group_size) and lists groups that span classes.
Hashes are cached by file content (~/.cache/pokemon-classifier or $POKEMON_CLASSIFIER_CACHE).

For every image: 64-bit pHash of the whole image and of the image cropped to its content box
(the same picture re-framed or padded differently). Two images are near-duplicates when either
Hamming distance is <= threshold; groups are connected components of that graph (union-find).
Hashes are cached on disk keyed by the file's sha256, so a re-run only reads bytes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageChops
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from pokemon_classifier import pokedex
from pokemon_classifier.annotations import read_annotations, remove_stale_temps, worker_pool
from pokemon_classifier.data import resolve_paths
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.fileio import atomic_write_csv, atomic_write_text, sha256_file
from pokemon_classifier.images import load_image
from pokemon_classifier.runtime import cache_dir, default_workers

DEFAULT_THRESHOLD = 4
HASH_VERSION = "phash8-v1"


def content_box(img: Image.Image, tol: int = 16) -> Image.Image:
    """Crop away a uniform border (the colour of the top-left pixel, usually white)."""
    bg = Image.new("RGB", img.size, img.getpixel((0, 0)))
    diff = ImageChops.difference(img, bg).convert("L").point(lambda v: 255 if v > tol else 0)
    box = diff.getbbox()
    if not box or (box[2] - box[0]) < 8 or (box[3] - box[1]) < 8:
        return img
    return img.crop(box)


def hash_image(img: Image.Image) -> tuple[int, int]:
    whole = imagehash.phash(img)
    crop = imagehash.phash(content_box(img))
    return int(str(whole), 16), int(str(crop), 16)


def _hash_file(args) -> tuple[str, int, int, str]:
    path, sha = args
    try:
        w, c = hash_image(load_image(path))
        return sha, w, c, ""
    except ImageError as e:
        return sha, 0, 0, str(e)


_sha = sha256_file


class HashCache:
    """{sha256: [whole, crop]} in one JSON file, written atomically."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else cache_dir() / f"{HASH_VERSION}.json"
        try:
            self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            self.data = {}

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data))


def compute_hashes(paths, workers: int | None = None, cache: HashCache | None = None,
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(whole, crop) pHashes as uint64 arrays, in the order of `paths`."""
    cache = cache or HashCache()
    shas = [_sha(p) for p in paths]
    todo = [(str(p), s) for p, s in zip(paths, shas) if s not in cache.data]
    todo = list({s: (p, s) for p, s in todo}.values())
    if todo:
        workers = workers or default_workers()
        bar = tqdm(total=len(todo), desc="hashing", unit="img", disable=not progress, leave=False)
        if workers > 1 and len(todo) > 32:
            with worker_pool(workers) as ex:  # workers die with us, even on kill -9
                results = list(ex.map(_hash_file, todo, chunksize=32))
                bar.update(len(todo))
        else:
            results = []
            for t in todo:
                results.append(_hash_file(t))
                bar.update()
        bar.close()
        for sha, w, c, err in results:
            if not err:
                cache.data[sha] = [f"{w:016x}", f"{c:016x}"]
        cache.save()
    whole = np.zeros(len(paths), dtype=np.uint64)
    crop = np.zeros(len(paths), dtype=np.uint64)
    for i, s in enumerate(shas):
        if s not in cache.data:
            raise ImageError(f"{paths[i]}: cannot be hashed (unreadable image)")
        w, c = cache.data[s]
        whole[i], crop[i] = int(w, 16), int(c, 16)
    return whole, crop


def near_pairs(hashes: np.ndarray, threshold: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, with Hamming(hashes[i], hashes[j]) <= threshold (vectorised, chunked)."""
    rows, cols = [], []
    n = len(hashes)
    for start in range(0, n, chunk):
        block = hashes[start:start + chunk, None] ^ hashes[None, :]
        d = np.bitwise_count(block)
        i, j = np.nonzero(d <= threshold)
        i = i + start
        keep = i < j
        rows.append(i[keep])
        cols.append(j[keep])
    return (np.concatenate(rows), np.concatenate(cols)) if rows else (np.array([], int), np.array([], int))


def group_ids(whole: np.ndarray, crop: np.ndarray, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """Connected components over the near-duplicate graph; singletons get their own id."""
    n = len(whole)
    r1, c1 = near_pairs(whole, threshold)
    r2, c2 = near_pairs(crop, threshold)
    r, c = np.concatenate([r1, r2]), np.concatenate([c1, c2])
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def find_groups(data_dir, df: pd.DataFrame | None = None, threshold: int = DEFAULT_THRESHOLD,
                workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """DataFrame[img_name, group, pokemon_id, group_size] for every annotated image."""
    df = read_annotations(data_dir, purpose="hash") if df is None else df
    paths = resolve_paths(data_dir, df)
    whole, crop = compute_hashes(paths, workers=workers, progress=progress)
    groups = group_ids(whole, crop, threshold)
    out = pd.DataFrame({"img_name": df["img_name"].to_numpy(), "group": groups,
                        "pokemon_id": df["pokemon_id"].to_numpy()})
    out["group_size"] = out.groupby("group")["img_name"].transform("size")
    return out


def summarize(groups: pd.DataFrame) -> dict:
    dup = groups[groups["group_size"] > 1]
    per = dup.groupby("group")["pokemon_id"].nunique()
    cross = per[per > 1].index
    return {"images": len(groups), "groups": int(dup["group"].nunique()), "images_in_groups": len(dup),
            "redundant_copies": len(dup) - int(dup["group"].nunique()),
            "cross_class_groups": len(cross),
            "cross_class": [sorted(dup[dup["group"] == g]["img_name"].tolist()) for g in cross]}


def run(data_dir, out_dir=None, threshold: int = DEFAULT_THRESHOLD, workers=None, echo=print) -> pd.DataFrame:
    out = Path(out_dir or data_dir) / "dedup.csv"
    remove_stale_temps(out.parent, [out.name], time.time())  # temp files of a killed earlier run
    groups = find_groups(data_dir, threshold=threshold, workers=workers)
    s = summarize(groups)
    atomic_write_csv(out, groups.sort_values(["group", "img_name"]))
    echo(f"{s['images']} images: {s['groups']} near-duplicate groups (threshold {threshold}) holding "
         f"{s['images_in_groups']} images ({s['redundant_copies']} redundant copies)")
    echo(f"{s['cross_class_groups']} groups span more than one class (likely label errors):")
    name_of = dict(zip(groups["img_name"], groups["pokemon_id"]))
    for members in s["cross_class"]:
        echo("  " + ", ".join(f"{m} ({pokedex.display_name(name_of[m])})" for m in members))
    echo(f"wrote {out}")
    return groups


def check_threshold(t: int) -> None:
    if not 0 <= t <= 64:
        raise UserError(f"--threshold {t} must be 0..64 (bits of a 64-bit hash)")


def add_arguments(p) -> None:
    from pokemon_classifier.fileio import out_dir
    from pokemon_classifier.runtime import positive_int

    p.add_argument("data", help="data folder with annotations.csv and images/")
    p.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD, help="max Hamming distance of 64-bit pHashes")
    p.add_argument("--out", type=out_dir, help="folder for dedup.csv (default: DATA)")
    p.add_argument("--workers", type=positive_int, default=None, help="hashing processes (default: all cores, at most 8)")


def main(args) -> int:
    check_threshold(args.threshold)
    run(args.data, args.out, threshold=args.threshold, workers=args.workers)
    return 0
