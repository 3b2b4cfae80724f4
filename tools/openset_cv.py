"""Choose the open-set acceptance level (and whether extra training pictures belong in the kNN bank)
by 2-fold cross-validation inside the TUNING half of a negatives folder; the reporting half that
`evaluate --negatives` uses is never read.

    python tools/openset_cv.py --weights best.pt --data data/pokemon_frlg --splits runs/splits_frlg.csv \
        --negatives ../shared/data/negatives --without data/pokemon --accept 0.95 0.96

For each bank (all training pictures; with --without DATA2, only those also annotated in DATA2) and
each accept level: fit the open-set state on one fold of the tuning negatives (+ generated degenerate
pictures), threshold on the validation split, and count the other fold's rejections per kind.
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def main(argv=None) -> int:
    from pokemon_classifier import openset
    from pokemon_classifier.annotations import read_annotations, safe_image_path
    from pokemon_classifier.models import load_checkpoint
    from pokemon_classifier.splits import read_splits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--splits", type=Path, required=True)
    ap.add_argument("--negatives", type=Path, required=True)
    ap.add_argument("--without", type=Path, help="a data folder: also try a bank of only its pictures")
    ap.add_argument("--accept", type=float, nargs="+", default=[0.95, 0.96])
    args = ap.parse_args(argv)

    model, meta = load_checkpoint(args.weights)
    T = float(meta.get("temperature", 1.0))
    ann = read_annotations(args.data).merge(read_splits(args.splits), on="img_name")
    tr, va = ann[ann["split"] == "train"], ann[ann["split"] == "val"]
    paths = lambda df: [safe_image_path(args.data, n) for n in df["img_name"]]  # noqa: E731
    tl, tf, _ = openset.extract(model, meta, paths(tr))
    vl, vf, _ = openset.extract(model, meta, paths(va))
    table = openset.read_negatives(args.negatives)
    tune = table[table["half"] == "tune"].reset_index(drop=True)
    nl, nf, _ = openset.extract(model, meta, list(tune["path"]))
    deg, kinds_deg = openset.degenerate_set(10, seed=1)
    dl, df_, _ = openset.extract(model, meta, deg)
    fold = openset.split_negatives(tune)  # a second fixed split by item, inside the tuning half
    dfold = np.array(["tune" if i % 2 == 0 else "report" for i in range(len(deg))])
    kinds = tune["kind"].to_numpy()
    banks = {"all": np.ones(len(tr), bool)}
    if args.without:
        banks["without extra"] = tr["img_name"].isin(set(read_annotations(args.without)["img_name"])).to_numpy()
    for bank, keep in banks.items():
        for accept in args.accept:
            rej: dict[str, list] = {}
            for a, b in (("tune", "report"), ("report", "tune")):
                st = openset.fit(tf[keep], np.concatenate([nf[fold == a], df_[dfold == a]]), vl, vf, T, accept=accept)
                head = openset.OpenSetHead(st)
                with torch.no_grad():
                    sn = head(torch.as_tensor(nl[fold == b]), torch.as_tensor(nf[fold == b])).numpy()
                    sd = head(torch.as_tensor(dl[dfold == b]), torch.as_tensor(df_[dfold == b])).numpy()
                for k in sorted(set(kinds)):
                    rej.setdefault(k, []).extend((sn[kinds[fold == b] == k] < st["threshold"]).tolist())
                rej.setdefault("degenerate", []).extend((sd < st["threshold"]).tolist())
            means = {k: float(np.mean(v)) for k, v in rej.items() if v}
            negs = [v for k, v in means.items() if k != "degenerate"]
            print(f"bank {bank}, accept {accept:g}: " + ", ".join(f"{k} {v:.3f} ({len(rej[k])})" for k, v in means.items())
                  + f" | mean over the negative kinds {np.mean(negs):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
