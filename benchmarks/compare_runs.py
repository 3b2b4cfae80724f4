"""python benchmarks/compare_runs.py ../shared/data/pokemon runs/splits.csv runs/B runs/E ... [--manifest-kinds]

One markdown row per training run: arch, init, size, augment, epochs, training minutes (from
metrics.csv), val and test top-1/top-5 on the given split file (group-aware unless you pass
another), and test top-1 on scraped pictures vs sprites when DATA/manifest.csv has a `kind` column.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

from pokemon_classifier import metrics as M  # noqa: E402
from pokemon_classifier.annotations import read_annotations  # noqa: E402
from pokemon_classifier.annotations import safe_image_path  # noqa: E402
from pokemon_classifier.evaluate import accuracy_by, default_by, read_by  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402
from pokemon_classifier.splits import read_splits  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("splits", type=Path)
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    df = read_annotations(args.data).merge(read_splits(args.splits), on="img_name")
    spec = default_by(args.data)
    kinds = None
    if spec:  # scraped pictures vs the rest (sprites, and two artworks)
        _, kinds = read_by(spec, args.data)
        kinds = kinds.where(kinds == "scraped", "sprites")
    print(f"split file: {args.splits}; machine: {machine()}")
    print("| run | arch | init | px | augment | epochs | train min | val top-1 | test top-1 | test top-5 | test scraped | test sprites |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        ck = run / "best.pt"
        clf = Classifier.load(ck)
        meta = clf.meta
        a = meta["args"]
        m = pd.read_csv(run / "metrics.csv")
        res = {}
        for split in ("val", "test"):
            part = df[df["split"] == split].reset_index(drop=True)
            p, _ = clf.probs_paths([safe_image_path(args.data, n) for n in part["img_name"]])
            y = part["pokemon_id"].to_numpy() - 1
            res[split] = (M.topk_accuracy(p, y, 1), M.topk_accuracy(p, y, 5))
            if split == "test" and kinds is not None:
                by = accuracy_by(kinds, part, p, y)
                res.update({k: by[k]["top1"] for k in ("scraped", "sprites") if k in by})
        init = "ImageNet" if a.get("pretrained") else "scratch"
        print(f"| {run.name} | {a['arch']} | {init} | {meta['preprocessing']['size']} | {a['augment']} | "
              f"{len(m)} (best {meta.get('epoch', '?')}) | {m['train_seconds'].sum() / 60:.0f} | {res['val'][0]:.4f} | "
              f"{res['test'][0]:.4f} | {res['test'][1]:.4f} | {res.get('scraped', np.nan):.4f} | {res.get('sprites', np.nan):.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
