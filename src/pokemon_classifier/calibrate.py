"""Fit temperature scaling on the validation split and an open-set 'unknown' threshold.

    pokemon-classifier calibrate --weights runs/x/best.pt --data data/ --splits data/splits.csv
    pokemon-classifier calibrate --weights best.pt --data data/ --splits s.csv --out best_calibrated.pt
    pokemon-classifier calibrate --weights soup.pt --data data/ --sizes 224 240 256   # also pick the crop size
    pokemon-classifier calibrate --weights best.pt --data data/ --negatives negatives/  # + the open-set score
    pokemon-classifier calibrate --weights best.pt --data data/ --negatives negatives/ --flip  # + its mirror image
    pokemon-classifier calibrate ... --negatives negatives/ --style-positives all  # keep new drawing styles

Everything is stored in the checkpoint and used by predict/serve/export. The top-probability
threshold keeps --keep of the correct validation predictions above it. With --negatives (a folder
of pictures that are not Gen-1 Pokemon, optionally with a manifest.csv `kind` column) the
feature-space open-set score of openset/ is fitted on the training split, the tuning half of the
negatives and generated degenerate pictures, with a threshold set on the validation images so that
at least --accept of new Gen-1 pictures pass with --confidence (openset.threshold_for);
`evaluate --negatives` reports on the other half. --style-positives also shows the outlier-exposure
head the training pictures rendered in other drawing styles (styles.py) as Gen-1 pictures, so that
it learns the species rather than the style (issue 25; the choice is in docs/unknown.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from pokemon_classifier import metrics as M
from pokemon_classifier.annotations import safe_image_path
from pokemon_classifier.errors import UserError
from pokemon_classifier.fileio import atomic_torch_save
from pokemon_classifier.runtime import DEVICE_HELP


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimising the NLL of softmax(logits / T) (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    t = torch.from_numpy(np.array(y))  # a copy: a pandas-backed array may be read-only

    def f(log_t):
        return float(torch.nn.functional.cross_entropy(z / np.exp(log_t), t))

    r = minimize_scalar(f, bounds=(-3, 3), method="bounded")
    return float(np.exp(r.x))


def unknown_threshold(probs: np.ndarray, y: np.ndarray, keep: float = 0.95) -> float:
    """Max-probability threshold that keeps `keep` of the correct predictions (open-set 'unknown')."""
    correct = probs.argmax(1) == y
    if not correct.any():
        return 0.0
    return float(np.quantile(probs.max(1)[correct], 1 - keep))


def choose_size(clf, paths, y_of, sizes, progress=False):
    """Score each inference crop size on labelled images: top-1, ties broken by the NLL after
    temperature scaling, then by the smaller size.

    `clf` is a predict.Classifier. Returns (best size, scores per size, (probs, errors) of the best
    size at temperature 1)."""
    scores, outputs = [], {}
    for size in sizes:
        if size < 32:
            raise UserError(f"--sizes: {size} px is too small (32 at least)")
        sized = clf.with_meta(preprocessing=dict(clf.meta["preprocessing"], size=int(size)), temperature=1.0)
        probs, errors = sized.probs_paths(paths, progress=progress, desc=f"{size} px")
        ok = np.array([i not in errors for i in range(len(paths))])
        y, p = y_of[ok], probs[ok]
        # NLL after each size's own temperature: the raw confidence changes with the size (BatchNorm
        # statistics, label smoothing), and calibration fixes that afterwards anyway
        logits = torch.from_numpy(np.log(np.clip(p, 1e-30, 1)))
        nll = torch.nn.functional.cross_entropy(logits / fit_temperature(logits.numpy(), y), torch.from_numpy(y))
        scores.append({"size": int(size), "top1": float((p.argmax(1) == y).mean()), "nll": float(nll)})
        outputs[int(size)] = probs, errors
        print(f"  {size} px: top-1 {scores[-1]['top1']:.4f}, NLL after temperature {scores[-1]['nll']:.4f}",
              file=sys.stderr)
    best = min(scores, key=lambda r: (-r["top1"], r["nll"], r["size"]))["size"]
    return best, scores, outputs[best]


def add_arguments(p) -> None:
    from pokemon_classifier.fileio import out_file
    from pokemon_classifier.runtime import fraction, positive_int

    p.add_argument("--weights", required=True, help="pokemon-classifier checkpoint (.pt) to calibrate")
    p.add_argument("--data", type=Path, required=True, help="folder with annotations.csv + images/")
    p.add_argument("--splits", type=Path, help="splits.csv (default: DATA/splits.csv)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"], help="the images to fit on")
    p.add_argument("--keep", type=fraction, default=0.95, help="share of correct predictions kept above the threshold")
    p.add_argument("--out", type=out_file, help="write here instead of updating --weights in place")
    p.add_argument("--sizes", type=positive_int, nargs="+", metavar="PX",
                   help="also choose the inference crop size among these by top-1 on --split (ties: lower calibrated NLL); "
                        "a model trained on random crops often scores higher a little above its training size")
    p.add_argument("--negatives", type=Path, metavar="DIR",
                   help="fit the open-set score with the tuning half of these non-Gen-1 pictures")
    p.add_argument("--accept", type=float, default=0.95,
                   help="with --negatives: the share of Gen-1 pictures the open-set threshold must accept")
    p.add_argument("--confidence", type=float, default=0.9,
                   help="with --negatives: how sure to be of --accept, given how few validation images there are "
                        "(a distribution-free bound; 0 = simply accept --accept of the validation images)")
    p.add_argument("--flip", action="store_true",
                   help="with --negatives: the open-set score is the mean over the image and its mirror image "
                        "(twice the compute per picture; README \"Unknown\" has what it changed)")
    p.add_argument("--style-positives", default="none", metavar="KINDS",
                   help="with --negatives: also fit the outlier-exposure head on the training pictures rendered in "
                        "these styles as Gen-1 pictures (all, none or a comma list of gameboy,pixel,icon,flat; "
                        "one rendition per picture; recorded in the checkpoint)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def main(args) -> int:
    from pokemon_classifier.evaluate import select
    from pokemon_classifier.models import model_from_checkpoint, read_checkpoint
    from pokemon_classifier.predict import Classifier
    from pokemon_classifier.runtime import pick_device

    device = pick_device(args.device)
    ck = read_checkpoint(args.weights)
    if "model" not in ck or "arch" not in ck:
        raise UserError(f"{args.weights}: calibrate needs a pokemon-classifier checkpoint")
    if args.negatives and not 0.5 <= args.accept < 1:
        raise UserError(f"--accept {args.accept}: choose a share between 0.5 and 1")
    if args.negatives and not 0 <= args.confidence < 1:
        raise UserError(f"--confidence {args.confidence}: choose a probability in [0, 1) (0 = no bound)")
    from pokemon_classifier.styles import parse_kinds

    style_positives = parse_kinds(args.style_positives)
    if style_positives and not args.negatives:
        raise UserError("--style-positives: needs --negatives (it shapes the open-set score)")
    model, meta = model_from_checkpoint(ck, args.weights)
    meta.pop("openset", None)  # refitted below (or dropped: it depends on the temperature and size)
    ck.pop("openset", None)
    clf = Classifier.from_model(model.to(device), meta, device).with_meta(temperature=1.0)
    df = select(args.data, args.splits, args.split)
    paths = [safe_image_path(args.data, n) for n in df["img_name"]]
    labels = df["pokemon_id"].map({dex: i for i, dex in enumerate(meta["class_ids"])})
    progress = sys.stderr.isatty()
    size_scores = None
    if args.sizes:
        if labels.isna().any():
            raise UserError(f"{args.data}: its {args.split} split has classes this checkpoint does not know")
        size, size_scores, (probs1, errors) = choose_size(clf, paths, labels.to_numpy(), args.sizes, progress)
        meta = dict(meta, preprocessing=dict(meta["preprocessing"], size=size))
        ck["preprocessing"] = meta["preprocessing"]
    else:
        probs1, errors = clf.probs_paths(paths, progress=progress, desc="calibrating")
    ok = np.array([i not in errors for i in range(len(df))])
    y = labels.to_numpy()[ok]
    logits = np.log(np.clip(probs1[ok], 1e-30, 1))  # log-softmax == logits up to a per-row constant
    t = fit_temperature(logits, y)
    probs_t = torch.softmax(torch.from_numpy(logits) / t, 1).numpy()
    thr = unknown_threshold(probs_t, y, args.keep)
    ck["temperature"], ck["unknown_threshold"] = t, thr
    ck["calibration"] = {"split": args.split, "n": int(ok.sum()), "ece_before": M.ece(probs1[ok], y),
                         "ece_after": M.ece(probs_t, y), "keep": args.keep}
    if size_scores:
        ck["calibration"]["size_scores"] = size_scores
    if args.negatives:
        from pokemon_classifier import openset

        train = select(args.data, args.splits, "train")
        ck["openset"], notes = openset.fit_from_files(
            model, meta, [safe_image_path(args.data, n) for n in train["img_name"]], [p for i, p in enumerate(paths) if ok[i]],
            args.negatives, t, args.accept, progress, confidence=args.confidence or None, flip=args.flip,
            style_positives=style_positives)
        for line in notes:
            print(line, file=sys.stderr)
        ck["unknown_threshold"] = 0.0  # the open-set score decides; the top-probability floor is off
    out = args.out or Path(args.weights)
    atomic_torch_save(ck, out)
    print(f"temperature {t:.3f} (ECE {ck['calibration']['ece_before']:.4f} -> {ck['calibration']['ece_after']:.4f}); "
          + (f"open-set threshold {ck['openset']['threshold']:.3f}; " if args.negatives else
             f"unknown below p={thr:.3f} keeps {args.keep:.0%} of correct {args.split} predictions; ")
          + (f"inference size {meta['preprocessing']['size']} px; " if size_scores else "") + f"wrote {out}")
    return 0
