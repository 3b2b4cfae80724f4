"""Make a styles folder for `evaluate --styles`: the pictures of one split rendered in other drawing styles.

    python tools/make_styles.py --data data/pokemon --splits runs/splits_final.csv --split test --out styles/
    python tools/make_styles.py ... --kinds gameboy,icon --real ../shared/data/sprites-frlg   # + real sprites
    pokemon-classifier evaluate --weights best.pt --data data/pokemon --split test --styles styles/

Writes OUT/images/<kind>/<name>.png and OUT/annotations.csv (img_name, pokemon_id, kind): every picture
of --split once per style of --kinds (styles.render, a per-picture seed from --seed, so the folder is the
same on every machine). --real DIR also copies the pictures of another data folder with the `kind`
of its manifest.csv (sprites-frlg: frlg-front, frlg-back, frlg-icon); mind that a folder used for
training measures training pictures. OUT holds copies of data pictures: keep it out of git.
"""

import argparse
import shutil
import sys
from pathlib import Path


def main(argv=None) -> int:
    import pandas as pd

    from pokemon_classifier import styles
    from pokemon_classifier.annotations import read_annotations, safe_image_path
    from pokemon_classifier.errors import ImageError, UserError
    from pokemon_classifier.evaluate import select
    from pokemon_classifier.fileio import atomic_open, atomic_write_csv
    from pokemon_classifier.images import load_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--splits", type=Path, help="splits.csv (default: DATA/splits.csv)")
    ap.add_argument("--split", choices=["train", "val", "test"], default="test")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--kinds", default="all", help=f"all, none or some of {','.join(styles.STYLE_KINDS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real", type=Path, metavar="DIR", help="also copy this data folder's pictures, kind from its manifest.csv")
    ap.add_argument("--limit", type=int, help="at most this many pictures of the split, drawn at random with a fixed seed")
    args = ap.parse_args(argv)
    try:
        kinds = styles.parse_kinds(args.kinds, "--kinds")
        df = select(args.data, args.splits, args.split).sort_values("img_name")
        df = df.sample(min(args.limit, len(df)), random_state=0).sort_values("img_name") if args.limit else df
        rows, skipped = [], 0
        for name, dex in zip(df["img_name"], df["pokemon_id"]):
            try:
                img = load_image(safe_image_path(args.data, name))
            except ImageError as e:
                print(f"skipped {e}", file=sys.stderr)
                skipped += 1
                continue
            for kind in kinds:
                out_name = f"{kind}/{Path(name).stem}.png"
                with atomic_open(args.out / "images" / out_name, "wb") as f:
                    styles.render(img, kind, styles.seed_for(name, kind, args.seed)).save(f, format="PNG")
                rows.append((out_name, int(dex), kind))
        if args.real:
            real = read_annotations(args.real)
            manifest = pd.read_csv(args.real / "manifest.csv", dtype=str, keep_default_na=False) \
                if (args.real / "manifest.csv").is_file() else pd.DataFrame(columns=["img_name", "kind"])
            kind_of = manifest.drop_duplicates("img_name").set_index("img_name")["kind"] if "kind" in manifest else {}
            for name, dex in zip(real["img_name"], real["pokemon_id"]):
                kind = str(kind_of.get(name, "") or "real")
                out_name = f"{kind}/{Path(name).name}"
                dest = args.out / "images" / out_name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(safe_image_path(args.real, name), dest)
                rows.append((out_name, int(dex), kind))
        if not rows:
            raise UserError(f"{args.out}: nothing to write (no readable picture, no style)")
        atomic_write_csv(args.out / "annotations.csv", pd.DataFrame(rows, columns=["img_name", "pokemon_id", "kind"]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} pictures ({', '.join(kinds + (['real'] if args.real else []))}) to {args.out}"
          + (f"; {skipped} unreadable skipped" if skipped else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
