"""Negatives on disk and their tune/report halves.

Negatives used to fit and tune never overlap those used to report: `split_negatives` halves the
photos by item and the later-generation Pokemon by species (artwork and icon of one species stay
on the same side); `file_key` is how a checkpoint remembers which files it was tuned on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def negative_item(img_name: str, kind: str) -> str:
    """The unit that must not straddle tune/report: the species for later-generation Pokemon
    (`gen3art252.jpg` and `gen3icon252.jpg` are one species), the file otherwise."""
    digits = "".join(ch for ch in Path(img_name).stem if ch.isdigit())
    if kind.startswith("gen") and digits:
        return f"species:{int(digits)}"
    return f"file:{img_name}"


def split_negatives(table, rng: np.random.Generator | None = None) -> np.ndarray:
    """'tune' or 'report' for every row of a negatives table (columns img_name, kind).

    Items (see negative_item) are ordered by a fixed hash and halved, separately for photos-like
    kinds and for Pokemon species, so the split is balanced and the same on every machine. With
    `rng` the order is random instead (tools/openset_cv.py --repeats: other splits of the same kind)."""
    items = [negative_item(n, k) for n, k in zip(table["img_name"], table["kind"])]
    family = {}
    for it, k in zip(items, table["kind"]):
        family.setdefault("species" if it.startswith("species:") else str(k), set()).add(it)
    tune = set()
    for members in family.values():
        ordered = sorted(members, key=_sha) if rng is None else list(rng.permutation(sorted(members)))
        tune.update(ordered[: len(ordered) // 2])
    return np.array(["tune" if it in tune else "report" for it in items])


def read_negatives(folder) -> "pd.DataFrame":
    """Images of FOLDER (recursive; FOLDER/images/ when it exists) with their `kind` from an optional
    FOLDER/manifest.csv (img_name,kind), 'negative' otherwise, and their tune/report `half`."""
    import pandas as pd

    from pokemon_classifier.errors import UserError
    from pokemon_classifier.images import is_image_file

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: negatives folder not found")
    root = folder / "images" if (folder / "images").is_dir() else folder
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise UserError(f"{folder}: no images in the negatives folder")
    table = pd.DataFrame({"img_name": [p.relative_to(root).as_posix() for p in files], "path": files})
    table["kind"] = "negative"
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        try:
            m = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise UserError(f"{manifest}: not a readable CSV ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        if {"img_name", "kind"} <= set(m.columns):
            kinds = m.drop_duplicates("img_name").set_index("img_name")["kind"]
            table["kind"] = table["img_name"].map(kinds).fillna("negative").replace("", "negative")
    table["half"] = split_negatives(table)
    return table


def file_key(path) -> str:
    """A short content hash: how a checkpoint remembers which negatives it was tuned on."""
    from pokemon_classifier.fileio import sha256_file

    return sha256_file(path)[:16]
