"""pokemon-classifier annotate: scan DATA/images/<name><NNN>.<ext>, decode every image once, write DATA/annotations.csv.

examples:
  pokemon-classifier annotate data/
  pokemon-classifier annotate data/ --min-per-class 30
  pokemon-classifier annotate --from-folders PokemonData/ --out data/    # Kaggle class-per-folder tree
  pokemon-classifier annotate data/ --add data/collected                # merge pictures kept by serve --collect
  pokemon-classifier annotate data/ --add sprites-frlg/ --exclude sprites-frlg/overlap.csv   # minus listed names

The work is in annotations.py; this module is only the subcommand.
"""

from __future__ import annotations


def add_arguments(p) -> None:
    from pokemon_classifier.fileio import out_dir
    from pokemon_classifier.runtime import nonnegative_int, positive_int

    p.add_argument("data", nargs="?", help="data folder holding images/")
    p.add_argument("--from-folders", metavar="SRC", help="import SRC/<Pokemon>/*.jpg into --out first")
    p.add_argument("--out", type=out_dir, help="destination data folder for --from-folders")
    p.add_argument("--strict", action="store_true",
                   help="with --from-folders: refuse folders that are not Gen-1 Pokemon instead of skipping them")
    p.add_argument("--add", metavar="SRC", help="copy SRC's annotated pictures (e.g. a `serve --collect` folder) "
                   "into DATA under the next free numbers, skipping files already there")
    p.add_argument("--exclude", metavar="CSV", help="with --add: leave out SRC's pictures named in this CSV's "
                   "img_name column (e.g. sprites-frlg/overlap.csv: near-duplicates of the shared pictures)")
    p.add_argument("--min-per-class", type=nonnegative_int, default=15, help="warn for classes with fewer images")
    p.add_argument("--workers", type=positive_int, default=None, help="decoding processes (default: all cores)")


def main(args) -> int:
    from pokemon_classifier import annotations
    from pokemon_classifier.errors import UserError

    if args.from_folders:
        out = args.out or args.data
        if not out:
            raise UserError("--from-folders needs --out DATA (the folder to create)")
        done = annotations.import_from_folders(args.from_folders, out, workers=args.workers, strict=args.strict)
        print("\n".join(done.lines))
        return 0
    if not args.data:
        raise UserError("give the data folder: pokemon-classifier annotate DATA")
    if args.exclude and not args.add:
        raise UserError("--exclude goes with --add SRC (pictures of SRC to leave out)")
    if args.add:
        from pokemon_classifier.collect import Collector

        annotations.read_annotations(args.data)  # DATA must already be a data folder
        exclude = ()
        if args.exclude:
            from pokemon_classifier.fileio import read_csv_input

            ex = read_csv_input(args.exclude, "--exclude CSV (img_name column)", dtype=str)
            if "img_name" not in ex.columns:
                raise UserError(f"{args.exclude}: needs an img_name column")
            exclude = set(ex["img_name"])
        r = Collector(args.data, max_bytes=1 << 62).add_folder(args.add, exclude=exclude)
        if r.left_out:
            print(f"left out {r.left_out} pictures of {args.add} (--exclude)")
        restored = f"; {r.restored} had been copied by an interrupted run and are now listed" if r.restored else ""
        print(f"added {r.added + r.restored} pictures from {args.add} to {args.data} "
              f"({r.skipped} already there{restored})")
        return 0
    done = annotations.annotate(args.data, min_per_class=args.min_per_class, workers=args.workers)
    print("\n".join(done.lines))
    return 0
