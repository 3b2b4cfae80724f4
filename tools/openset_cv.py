"""Choose the open-set settings (acceptance level and its confidence, the head's C, the weights of
the score's parts, whether the head also sees the texture statistics, whether the score is the mean
over the image and its mirror image, and whether extra training pictures belong in the kNN bank) by
2-fold cross-validation inside the TUNING half of a negatives folder; the reporting half that
`evaluate --negatives` uses is never read.

    python tools/openset_cv.py --weights best.pt --data data/pokemon_frlg --splits runs/splits_frlg.csv \
        --negatives ../shared/data/negatives --without data/pokemon --accept 0.95 --confidence 0 0.9 \
        --C 0.001 0.01 --part-weights 1,1,1 1.5,2,1 --style on off --flip on off --repeats 10

For each bank (all training pictures; with --without DATA2, only those also annotated in DATA2) and
each setting: fit the open-set state on one fold of the tuning negatives (+ generated degenerate
pictures), threshold on the validation split, and count the other fold's rejections per kind.
With --repeats R the 2-fold split is drawn R times (the first is openset.split_negatives' fixed
one, the others random halves by item), and the rates are the means over all of them: with 50
photos a fold, one split alone moves by a few points.
"""

import argparse
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    from pokemon_classifier import openset
    from pokemon_classifier.annotations import read_annotations, safe_image_path
    from pokemon_classifier.models import load_checkpoint
    from pokemon_classifier.runtime import positive_int
    from pokemon_classifier.splits import read_splits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--splits", type=Path, required=True)
    ap.add_argument("--negatives", type=Path, required=True)
    ap.add_argument("--without", type=Path, help="a data folder: also try a bank of only its pictures")
    ap.add_argument("--accept", type=float, nargs="+", default=[0.95])
    ap.add_argument("--confidence", type=float, nargs="+", default=[0.9],
                    help="threshold_for's confidence (0: the plain quantile of the validation scores)")
    ap.add_argument("--C", type=float, nargs="+", default=[openset.OE_C], help="the outlier-exposure head's C")
    ap.add_argument("--part-weights", nargs="+", metavar="KNN,OE,MSP",
                    default=[",".join(str(openset.WEIGHTS[p]) for p in openset.PARTS)],
                    help="weights of the z-scored parts " + "/".join(openset.PARTS))
    ap.add_argument("--style", nargs="+", choices=["on", "off"], default=["on"],
                    help="the outlier-exposure head with (on) or without (off) the texture statistics")
    ap.add_argument("--flip", nargs="+", choices=["on", "off"], default=["off"],
                    help="the score averaged over the image and its mirror image (on) or the image alone (off)")
    ap.add_argument("--repeats", type=positive_int, default=1,
                    help="how many 2-fold splits of the tuning half to average over")
    args = ap.parse_args(argv)
    try:
        grid = [dict(zip(openset.PARTS, map(float, w.split(",")), strict=True)) for w in args.part_weights]
    except ValueError:
        ap.error(f"--part-weights {' '.join(args.part_weights)}: give {len(openset.PARTS)} numbers per setting, e.g. 1.5,2,1")

    model, meta = load_checkpoint(args.weights)
    T = float(meta.get("temperature", 1.0))
    dim = openset.WithFeatures(model).dim
    ann = read_annotations(args.data).merge(read_splits(args.splits), on="img_name")
    tr, va = ann[ann["split"] == "train"], ann[ann["split"] == "val"]
    paths = lambda df: [safe_image_path(args.data, n) for n in df["img_name"]]  # noqa: E731
    tl, tf, _ = openset.extract(model, meta, paths(tr))
    table = openset.read_negatives(args.negatives)
    tune = table[table["half"] == "tune"].reset_index(drop=True)
    deg, _ = openset.degenerate_set(10, seed=1)
    # (logits, features) of the validation images, the tuning negatives and the degenerate ones; mirrored too
    views = {flip: [openset.extract(model, meta, items, flip=flip)[:2] for items in (paths(va), list(tune["path"]), deg)]
             for flip in (False, True) if not flip or "on" in args.flip}
    (vl, vf), (nl, nf), (dl, df_) = views[False]
    # a second split by item inside the tuning half: the fixed one, then (--repeats) random ones of the same kind
    rng = np.random.default_rng(0)
    folds = [openset.split_negatives(tune)] + [openset.split_negatives(tune, rng) for _ in range(args.repeats - 1)]
    dfold = np.array(["tune" if i % 2 == 0 else "report" for i in range(len(deg))])
    kinds = tune["kind"].to_numpy()
    banks = {"all": np.ones(len(tr), bool)}
    if args.without:
        banks["without extra"] = tr["img_name"].isin(set(read_annotations(args.without)["img_name"])).to_numpy()
    settings = [(bank, accept, conf, C, w, st, fl) for bank in banks for accept in args.accept for conf in args.confidence
                for C in args.C for w in grid for st in args.style for fl in args.flip]

    def scores(head, flip, part, m):  # the head's score of rows m of part (1: negatives, 2: degenerate)
        with torch.no_grad():
            s = [head(*(torch.as_tensor(a[m]) for a in views[f][part])).numpy() for f in ([False, True] if flip else [False])]
        return np.mean(s, 0)

    for bank, accept, conf, C, w, style, flip in settings:
        keep, flip = banks[bank], flip == "on"
        rej: dict[str, list] = {}
        for fold in folds:
            for a, b in (("tune", "report"), ("report", "tune")):
                st = openset.fit(tf[keep], np.concatenate([nf[fold == a], df_[dfold == a]]), vl, vf, T, dim=dim,
                                 opts=openset.FitOptions(accept=accept, C=C, weights=w, style=style == "on",
                                                         confidence=conf or None),
                                 val_flipped=views[True][0] if flip else None)
                head = openset.OpenSetHead(st)
                sn, sd = scores(head, flip, 1, fold == b), scores(head, flip, 2, dfold == b)
                for k in sorted(set(kinds)):
                    rej.setdefault(k, []).extend((sn[kinds[fold == b] == k] < st["threshold"]).tolist())
                rej.setdefault("degenerate", []).extend((sd < st["threshold"]).tolist())
        means = {k: float(np.mean(v)) for k, v in rej.items() if v}
        negs = [v for k, v in means.items() if k != "degenerate"]
        setting = (f"bank {bank}, accept {accept:g} (confidence {conf:g}), C {C:g}, weights {','.join(f'{v:g}' for v in w.values())}, "
                   f"texture {style}, mirror image {'on' if flip else 'off'}")
        print(setting + ": " + ", ".join(f"{k} {v:.3f} ({len(rej[k]) // len(folds)})" for k, v in means.items())
              + f" | mean over the negative kinds {np.mean(negs):.3f}" + (f" ({len(folds)} splits)" if len(folds) > 1 else ""),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
