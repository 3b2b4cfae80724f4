"""Group near-duplicate images: perceptual hashes (like with like and crosswise) plus backbone embeddings.

    pokemon-classifier dedup data/
    pokemon-classifier dedup data/ --threshold 6 --embed-threshold 0.95 --out reports/
    pokemon-classifier dedup data/ --hash-only          # the v1 grouping (pHash <= 4, like with like)

Writes dedup.csv (img_name, group, pokemon_id, group_size, hash_group, embed_group) and lists groups
that span classes. Hashes and features are cached (~/.cache/pokemon-classifier or $POKEMON_CLASSIFIER_CACHE).

Two passes, merged into one graph whose connected components (scipy.sparse.csgraph) are the groups:
- hash: 64-bit pHash of the whole image and of its content box. Two images are near-duplicates when
  any of whole~whole, box~box, whole~box or box~whole is within `threshold` bits: comparing crosswise
  catches a render that one source padded and another cropped tight.
- embedding: cosine similarity of ImageNet efficientnet_lite0 features (the ones `clean` caches,
  features.extract_features) >= `embed_threshold`: catches recoloured or rescaled copies whose hashes
  drift apart. The default threshold was chosen by eye on the shared data (docs/data.md, "Near-duplicates").
`hash_group` and `embed_group` keep each pass's own components so a leak can be reported per measure.
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
from pokemon_classifier.annotations import read_annotations, worker_pool
from pokemon_classifier.data import resolve_paths
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.fileio import atomic_write_csv, atomic_write_text, remove_stale_temps, sha256_file
from pokemon_classifier.images import load_image
from pokemon_classifier.runtime import cache_dir, default_workers

DEFAULT_THRESHOLD = 6  # with imagehash's pHash the recoloured/re-cropped copies of issue 16 sit at 6 bits
DEFAULT_EMBED_THRESHOLD = 0.88
LEGACY_THRESHOLD = 4  # --hash-only: the grouping behind the v1 split (like with like, no embeddings)
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


def cross_pairs(a: np.ndarray, b: np.ndarray, threshold: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, with Hamming(a[i], b[j]) <= threshold or Hamming(b[i], a[j]) <= threshold."""
    rows, cols = [], []
    for start in range(0, len(a), chunk):
        i, j = np.nonzero(np.bitwise_count(a[start:start + chunk, None] ^ b[None, :]) <= threshold)
        i = i + start
        keep = i != j
        rows.append(np.minimum(i[keep], j[keep]))
        cols.append(np.maximum(i[keep], j[keep]))
    return (np.concatenate(rows), np.concatenate(cols)) if rows else (np.array([], int), np.array([], int))


def hash_pairs(whole: np.ndarray, crop: np.ndarray, threshold: int, crosswise: bool = True):
    r1, c1 = near_pairs(whole, threshold)
    r2, c2 = near_pairs(crop, threshold)
    parts = [(r1, c1), (r2, c2)] + ([cross_pairs(whole, crop, threshold)] if crosswise else [])
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def normalize(feats: np.ndarray) -> np.ndarray:
    f = np.asarray(feats, dtype=np.float32)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def embed_pairs(feats: np.ndarray, threshold: float, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, with cosine(feats[i], feats[j]) >= threshold (chunked, never the full matrix)."""
    f = normalize(feats)
    rows, cols = [], []
    for start in range(0, len(f), chunk):
        i, j = np.nonzero(f[start:start + chunk] @ f.T >= threshold)
        i = i + start
        keep = i < j
        rows.append(i[keep])
        cols.append(j[keep])
    return (np.concatenate(rows), np.concatenate(cols)) if rows else (np.array([], int), np.array([], int))


def components(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Connected components of the undirected graph on n nodes; singletons get their own id."""
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def group_ids(whole: np.ndarray, crop: np.ndarray, threshold: int = DEFAULT_THRESHOLD,
              crosswise: bool = True) -> np.ndarray:
    """Connected components over the hash near-duplicate graph; singletons get their own id."""
    return components(len(whole), *hash_pairs(whole, crop, threshold, crosswise))


def find_groups(data_dir, df: pd.DataFrame | None = None, threshold: int | None = None,
                workers: int | None = None, progress: bool = True,
                embed_threshold: float | None = DEFAULT_EMBED_THRESHOLD, hash_only: bool = False) -> pd.DataFrame:
    """DataFrame[img_name, group, pokemon_id, group_size, hash_group(, embed_group)] for every annotated image.

    hash_only reproduces the v1 grouping exactly (like-with-like pHash, threshold 4 unless given, no
    embeddings); embed_threshold None or 0 skips the embedding pass."""
    df = read_annotations(data_dir, purpose="hash") if df is None else df
    threshold = (LEGACY_THRESHOLD if hash_only else DEFAULT_THRESHOLD) if threshold is None else threshold
    paths = resolve_paths(data_dir, df)
    whole, crop = compute_hashes(paths, workers=workers, progress=progress)
    hr, hc = hash_pairs(whole, crop, threshold, crosswise=not hash_only)
    n = len(df)
    hash_group = components(n, hr, hc)
    out = pd.DataFrame({"img_name": df["img_name"].to_numpy(), "group": hash_group,
                        "pokemon_id": df["pokemon_id"].to_numpy()})
    out["group_size"] = out.groupby("group")["img_name"].transform("size")
    out["hash_group"] = hash_group
    if embed_threshold and not hash_only:
        from pokemon_classifier.features import extract_features

        er, ec = embed_pairs(extract_features(data_dir, df, progress=progress), embed_threshold)
        out["embed_group"] = components(n, er, ec)
        out["group"] = components(n, np.concatenate([hr, er]), np.concatenate([hc, ec]))
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


def describe(threshold: int | None, embed_threshold: float | None, hash_only: bool) -> str:
    if hash_only:
        return f"pHash <= {LEGACY_THRESHOLD if threshold is None else threshold}, like with like only"
    t = DEFAULT_THRESHOLD if threshold is None else threshold
    return f"pHash <= {t} incl. crosswise" + (f", cosine >= {embed_threshold}" if embed_threshold else "")


def run(data_dir, out_dir=None, threshold: int | None = None, workers=None,
        embed_threshold: float | None = DEFAULT_EMBED_THRESHOLD, hash_only: bool = False) -> tuple[pd.DataFrame, Path]:
    """The dedup command's work: (the groups, the dedup.csv it wrote)."""
    out = Path(out_dir or data_dir) / "dedup.csv"
    remove_stale_temps(out.parent, [out.name], time.time())  # temp files of a killed earlier run
    groups = find_groups(data_dir, threshold=threshold, workers=workers, embed_threshold=embed_threshold,
                         hash_only=hash_only)
    atomic_write_csv(out, groups.sort_values(["group", "img_name"]))
    return groups, out


def describe_groups(groups: pd.DataFrame, how: str) -> list[str]:
    """What dedup says about its groups (`how`: describe()'s words for the measure)."""
    s = summarize(groups)
    lines = [f"{s['images']} images: {s['groups']} near-duplicate groups ({how}) holding "
             f"{s['images_in_groups']} images ({s['redundant_copies']} redundant copies)",
             f"{s['cross_class_groups']} groups span more than one class (likely label errors):"]
    name_of = dict(zip(groups["img_name"], groups["pokemon_id"]))
    lines += ["  " + ", ".join(f"{m} ({pokedex.display_name(name_of[m])})" for m in members) for members in s["cross_class"]]
    return lines


def check_threshold(t: int) -> None:
    if not 0 <= t <= 64:
        raise UserError(f"--threshold {t} must be 0..64 (bits of a 64-bit hash)")


def check_embed_threshold(t: float) -> None:
    if not 0 <= t <= 1:
        raise UserError(f"--embed-threshold {t} must be a cosine similarity in 0..1 (0 turns the pass off)")


def add_grouping_arguments(p) -> None:
    """The near-duplicate flags `dedup` and `split` share."""
    p.add_argument("--threshold", type=int, default=None,
                   help=f"max Hamming distance of 64-bit pHashes (default {DEFAULT_THRESHOLD}; "
                        f"{LEGACY_THRESHOLD} with --hash-only)")
    p.add_argument("--embed-threshold", type=float, default=DEFAULT_EMBED_THRESHOLD,
                   help=f"min cosine similarity of backbone features (default {DEFAULT_EMBED_THRESHOLD}; 0: no "
                        "embedding pass)")
    p.add_argument("--hash-only", action="store_true",
                   help="the v1 grouping: like-with-like pHash only, no crosswise or embedding pass "
                        "(reproduces the split the v1 best.pt was trained on)")


def check_grouping_arguments(args) -> None:
    if args.threshold is not None:
        check_threshold(args.threshold)
    check_embed_threshold(args.embed_threshold)


def add_arguments(p) -> None:
    from pokemon_classifier.fileio import out_dir
    from pokemon_classifier.runtime import positive_int

    p.add_argument("data", help="data folder with annotations.csv and images/")
    add_grouping_arguments(p)
    p.add_argument("--out", type=out_dir, help="folder for dedup.csv (default: DATA)")
    p.add_argument("--workers", type=positive_int, default=None, help="hashing processes (default: all cores, at most 8)")


def main(args) -> int:
    check_grouping_arguments(args)
    groups, out = run(args.data, args.out, threshold=args.threshold, workers=args.workers,
                      embed_threshold=args.embed_threshold, hash_only=args.hash_only)
    for line in describe_groups(groups, describe(args.threshold, args.embed_threshold, args.hash_only)):
        print(line)
    print(f"wrote {out}")
    return 0
