"""Argument parsing for the data subcommands (annotate, dedup, split); the work is in their modules."""

from __future__ import annotations

from pathlib import Path

annotate_doc = """Scan DATA/images/<name><NNN>.<ext>, decode every image once, write DATA/annotations.csv.

examples:
  pokemon-classifier annotate data/
  pokemon-classifier annotate data/ --min-per-class 30
  pokemon-classifier annotate --from-folders PokemonData/ --out data/    # Kaggle class-per-folder tree
"""


def annotate_arguments(p):
    p.add_argument("data", nargs="?", help="data folder holding images/")
    p.add_argument("--from-folders", metavar="SRC", help="import SRC/<Pokemon>/*.jpg into --out first")
    p.add_argument("--out", help="destination data folder for --from-folders")
    p.add_argument("--min-per-class", type=int, default=15, help="warn for classes with fewer images")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")


def annotate_main(args):
    from pokemon_classifier import annotations
    from pokemon_classifier.errors import UserError

    if args.from_folders:
        out = args.out or args.data
        if not out:
            raise UserError("--from-folders needs --out DATA (the folder to create)")
        annotations.import_from_folders(args.from_folders, out, workers=args.workers)
        return 0
    if not args.data:
        raise UserError("give the data folder: pokemon-classifier annotate DATA")
    annotations.annotate(args.data, min_per_class=args.min_per_class, workers=args.workers)
    return 0


dedup_doc = """Group near-duplicate images by perceptual hash (whole image and content box).

Writes dedup.csv (img_name, group, pokemon_id, group_size) and lists groups that span classes.
Hashes are cached by file content (~/.cache/pokemon-classifier or $POKEMON_CLASSIFIER_CACHE).

examples:
  pokemon-classifier dedup data/
  pokemon-classifier dedup data/ --threshold 6 --out reports/
"""


def dedup_arguments(p):
    from pokemon_classifier.dedup import DEFAULT_THRESHOLD

    p.add_argument("data", help="data folder with annotations.csv and images/")
    p.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD, help="max Hamming distance of 64-bit pHashes")
    p.add_argument("--out", help="folder for dedup.csv (default: DATA)")
    p.add_argument("--workers", type=int, default=None)


def dedup_main(args):
    from pokemon_classifier import dedup

    _check_threshold(args.threshold)
    dedup.run(args.data, args.out, threshold=args.threshold, workers=args.workers)
    return 0


split_doc = """Stratified train/val/test split where near-duplicate groups never straddle splits.

Writes splits.csv (img_name, split) and prints a leak report: val/test images with a
near-duplicate in train (0 for this split; --random shows the original project's leak).

examples:
  pokemon-classifier split data/
  pokemon-classifier split data/ --seed 1 --val 0.1 --test 0.2
  pokemon-classifier split data/ --random --out data/splits_random.csv
"""


def split_arguments(p):
    p.add_argument("data", help="data folder with annotations.csv and images/")
    p.add_argument("--val", type=float, default=0.15, help="fraction for validation")
    p.add_argument("--test", type=float, default=0.15, help="fraction for test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random", action="store_true", help="the original leaky random split (for comparison)")
    p.add_argument("--threshold", type=int, default=None, help="near-duplicate threshold (default: dedup's)")
    p.add_argument("--out", type=Path, help="output CSV (default: DATA/splits.csv)")
    p.add_argument("--workers", type=int, default=None)


def split_main(args):
    from pokemon_classifier import splits

    if args.threshold is not None:
        _check_threshold(args.threshold)
    splits.run(args.data, args.out, val=args.val, test=args.test, seed=args.seed, random=args.random,
               threshold=args.threshold, workers=args.workers)
    return 0


def _check_threshold(t):
    from pokemon_classifier.errors import UserError

    if not 0 <= t <= 64:
        raise UserError(f"--threshold {t} must be 0..64 (bits of a 64-bit hash)")
