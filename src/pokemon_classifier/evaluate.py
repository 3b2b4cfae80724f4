"""Honest evaluation: metrics, plots, and how much near-duplicates inflate the score.

    pokemon-classifier evaluate --weights best.pt --data data/ --splits data/splits.csv --split test --out report/
    pokemon-classifier evaluate --weights best.pt --data other_testset/ --json      # every image listed
    pokemon-classifier evaluate --weights best.pt --data data/ --splits data/splits.csv --leak-report
    pokemon-classifier calibrate --weights best.pt --data data/ --splits data/splits.csv
    pokemon-classifier evaluate ... --by data/manifest.csv:kind    # accuracy per source kind

Works with our checkpoints and the original project's (1000-way mobilenet_v3_large state_dict).
Unreadable images are counted and listed, never fatal. When DATA/manifest.csv has a `kind` column
(the shared data's does: scraped photos vs game sprites) the accuracy per kind is reported too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pokemon_classifier import metrics as M
from pokemon_classifier import pokedex
from pokemon_classifier.annotations import read_annotations, safe_image_path
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.fileio import atomic_savefig, atomic_torch_save, atomic_write_csv, atomic_write_text, subplots
from pokemon_classifier.images import load_image
from pokemon_classifier.models import load_checkpoint, model_from_checkpoint, read_checkpoint, resolve_weights
from pokemon_classifier.presets import eval_transform


class _SafeDataset(Dataset):
    """(tensor, index, ok): an unreadable image yields zeros and ok=False instead of an exception."""

    def __init__(self, paths, transform, size):
        self.paths, self.transform, self.size = paths, transform, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return self.transform(load_image(self.paths[i])), i, ""
        except ImageError as e:
            return torch.zeros(3, self.size, self.size), i, str(e)


@torch.inference_mode()
def predict_probs(model, meta, paths, batch_size=64, device="cpu", workers=None, progress=True,
                  temperature: float | None = None):
    """Softmax probabilities (N,C) for `paths` in one batched pass; unreadable rows are NaN."""
    pre = meta["preprocessing"]
    ds = _SafeDataset(paths, eval_transform(pre), pre["size"])
    workers = (1 if len(paths) > batch_size else 0) if workers is None else workers
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers)
    t = float(meta.get("temperature", 1.0) if temperature is None else temperature)
    out = np.full((len(paths), len(meta["class_ids"])), np.nan, dtype=np.float32)
    errors = {}
    for x, idx, err in tqdm(loader, desc="evaluating", unit="batch", disable=not progress, leave=False):
        ok = torch.tensor([e == "" for e in err])
        for i, e in zip(idx.tolist(), err):
            if e:
                errors[i] = e
        if ok.any():
            logits = model(x[ok].to(device).contiguous(memory_format=torch.channels_last)).float()
            out[idx[ok].numpy()] = torch.softmax(logits / t, 1).cpu().numpy()
    return out, errors


def select(data_dir, splits_path=None, split=None) -> pd.DataFrame:
    df = read_annotations(data_dir)
    if split:
        from pokemon_classifier.splits import SPLITS_CSV, read_splits

        path = Path(splits_path) if splits_path else Path(data_dir) / SPLITS_CSV
        sp = read_splits(path)
        df = df.merge(sp, on="img_name", how="inner")
        df = df[df["split"] == split]
        if df.empty:
            raise UserError(f"{path}: no images in split {split!r}")
    return df.reset_index(drop=True)


def evaluate_frame(model, meta, data_dir, df, batch_size=64, device="cpu", progress=True):
    """Returns (summary dict, probs of readable rows, y of readable rows, readable df, errors)."""
    paths = [safe_image_path(Path(data_dir), n) for n in df["img_name"]]
    probs, errors = predict_probs(model, meta, paths, batch_size, device, progress=progress)
    index_of = {dex: i for i, dex in enumerate(meta["class_ids"])}
    unknown = sorted(set(df["pokemon_id"]) - set(index_of))
    if unknown:
        raise UserError(f"the model does not know dex ids {unknown} found in {data_dir}/annotations.csv")
    ok = np.array([i not in errors for i in range(len(df))], dtype=bool)
    y = df["pokemon_id"].map(index_of).to_numpy()[ok]
    p = probs[ok]
    s = M.summary(p, y)
    s["unreadable"] = len(errors)
    per = {}
    pred = p.argmax(1)
    for dex in sorted(df["pokemon_id"].unique()):
        m = y == index_of[dex]
        per[str(int(dex))] = {"n": int(m.sum()), "top1": float((pred[m] == y[m]).mean()) if m.any() else float("nan")}
    s["per_class"] = per
    return s, p, y, df[ok].reset_index(drop=True), [errors[i] for i in sorted(errors)]


def read_by(spec: str, data_dir) -> tuple[str, pd.Series]:
    """'FILE.csv:COLUMN' -> (COLUMN, Series img_name -> group). FILE defaults to DATA/manifest.csv."""
    path, _, column = spec.rpartition(":")
    path = Path(path) if path else Path(data_dir) / "manifest.csv"
    if not column:
        raise UserError(f"--by {spec}: expected FILE.csv:COLUMN")
    if not path.is_file():
        raise UserError(f"{path}: file not found (--by {spec})")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{path}: not a readable CSV ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    for c in ("img_name", column):
        if c not in table.columns:
            raise UserError(f"{path}: no {c!r} column (has {', '.join(table.columns)})")
    return column, table.drop_duplicates("img_name").set_index("img_name")[column]


def default_by(data_dir) -> str | None:
    """'DATA/manifest.csv:kind' when that file exists with a kind column (the shared data's source kinds)."""
    manifest = Path(data_dir) / "manifest.csv"
    try:
        if manifest.is_file() and "kind" in pd.read_csv(manifest, nrows=0).columns:
            return f"{manifest}:kind"
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
        pass  # an unreadable manifest is only a missing breakdown here; --by names it explicitly
    return None


def accuracy_by(groups: pd.Series, ok_df: pd.DataFrame, p: np.ndarray, y: np.ndarray) -> dict:
    """{group: {n, top1, top5}} over the readable rows; images the table does not list go to '(unlisted)'."""
    g = ok_df["img_name"].map(groups).fillna("(unlisted)").to_numpy()
    out = {}
    for k in sorted(set(g)):
        m = g == k
        out[str(k)] = {"n": int(m.sum()), "top1": M.topk_accuracy(p[m], y[m], 1), "top5": M.topk_accuracy(p[m], y[m], 5)}
    return out


# ---------------------------------------------------------------- plots

def plot_confusion(cm: np.ndarray, class_ids, path, n_annotate=10) -> None:
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Circle

    n = len(class_ids)
    fig, ax = subplots(figsize=(16, 15))
    im = ax.imshow(np.ma.masked_equal(cm, 0), norm=LogNorm(vmin=1, vmax=max(2, cm.max())), cmap="viridis",
                   interpolation="nearest")
    names = [pokedex.display_name(i) for i in class_ids]
    ax.set_xticks(range(n)), ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=4.5), ax.set_yticklabels(names, fontsize=4.5)
    ax.set_xlabel("predicted (dex order)"), ax.set_ylabel("true (dex order)")
    for t, p, c in M.top_confusions(cm, n_annotate):
        ax.add_patch(Circle((p, t), 2.2, fill=False, color="red", lw=1))
        ax.annotate(f"{names[t]}→{names[p]} ({c})", (p, t), xytext=(p + 4, t - 3), fontsize=7, color="red")
    fig.colorbar(im, ax=ax, shrink=0.6, label="images (log scale)")
    ax.set_title("Confusion matrix (diagonal = correct; red circles: most confused pairs)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)


def plot_reliability(probs, y, path, n_bins=15) -> None:
    edges, conf, acc, count = M.reliability(probs, y, n_bins)
    centers = (edges[:-1] + edges[1:]) / 2
    fig, ax = subplots(figsize=(5, 5))
    ax.bar(centers, np.nan_to_num(acc), width=1 / n_bins, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlabel("confidence (max probability)"), ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {M.ece(probs, y, n_bins):.3f}, {n_bins} bins)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)


def plot_top_losses(paths, probs, y, class_ids, path, n=24) -> None:
    loss = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1))
    order = np.argsort(-loss)[:n]
    cols = 6
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig, axes = subplots(rows, cols, figsize=(cols * 2.4, rows * 2.9))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), order):
        try:
            img = load_image(paths[i])
            img.thumbnail((160, 160))
            ax.imshow(img)
        except ImageError:
            pass
        p = int(probs[i].argmax())
        ax.set_title(f"{Path(paths[i]).name}\ntrue {pokedex.display_name(class_ids[y[i]])}\n"
                     f"pred {pokedex.display_name(class_ids[p])} {probs[i, p]:.2f}", fontsize=7)
    fig.suptitle("Top losses: the images the model gets most wrong (check their labels)")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=90)


# ---------------------------------------------------------------- leak measurement

def leak_split(data_dir, df_all: pd.DataFrame, splits: pd.DataFrame, split: str = "test") -> pd.Series:
    """For images of `split`: True when a near-duplicate (same dedup group) sits in train."""
    from pokemon_classifier import dedup

    groups = dedup.find_groups(data_dir, df_all, progress=False).merge(splits, on="img_name")
    train_groups = set(groups.loc[groups["split"] == "train", "group"])
    part = groups[groups["split"] == split]
    return pd.Series(part["group"].isin(train_groups).to_numpy(), index=part["img_name"].to_numpy())


def leak_report(model, meta, data_dir, splits_path, split="test", batch_size=64, device="cpu", progress=True) -> dict:
    from pokemon_classifier.splits import read_splits

    df_all = read_annotations(data_dir)
    sp = read_splits(splits_path, df_all)
    leaked = leak_split(data_dir, df_all, sp, split)
    df = df_all.merge(sp, on="img_name")
    df = df[df["split"] == split].reset_index(drop=True)
    s, p, y, ok_df, _ = evaluate_frame(model, meta, data_dir, df, batch_size, device, progress)
    mask = leaked.reindex(ok_df["img_name"]).to_numpy(dtype=bool)
    correct = p.argmax(1) == y
    out = {"split": split, "n": int(len(y)), "top1": float(correct.mean()),
           "with_duplicate_in_train": {"n": int(mask.sum()), "top1": float(correct[mask].mean()) if mask.any() else None},
           "without_duplicate_in_train": {"n": int((~mask).sum()), "top1": float(correct[~mask].mean()) if (~mask).any() else None}}
    return out


# ---------------------------------------------------------------- calibration

def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimising the NLL of softmax(logits / T) (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    t = torch.from_numpy(np.asarray(y))

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


# ---------------------------------------------------------------- CLI

def add_arguments(p) -> None:
    p.add_argument("--weights", help="checkpoint (default: best.pt at the repository root)")
    p.add_argument("--data", type=Path, required=True, help="folder with annotations.csv + images/")
    p.add_argument("--splits", type=Path, help="splits.csv (default: DATA/splits.csv when --split is given)")
    p.add_argument("--split", choices=["train", "val", "test"], help="evaluate only this split")
    p.add_argument("--out", type=Path, help="report folder: metrics.json, per_class.csv, PNG plots, report.md")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--leak-report", action="store_true",
                   help="accuracy on test images with vs without a near-duplicate in train")
    p.add_argument("--by", metavar="FILE.csv:COLUMN",
                   help="also report accuracy per value of COLUMN, joined on img_name "
                        "(default: DATA/manifest.csv:kind when that file has a kind column)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _device(name):
    from pokemon_classifier.train import pick_device

    return pick_device(name)


def main(args) -> int:
    device = _device(args.device)
    weights = resolve_weights(args.weights)
    model, meta = load_checkpoint(weights, device)
    model = model.to(memory_format=torch.channels_last)
    progress = args.progress and not args.json and sys.stderr.isatty()
    if args.leak_report:
        splits = args.splits or args.data / "splits.csv"
        rep = leak_report(model, meta, args.data, splits, args.split or "test", args.batch_size, device, progress)
        if args.json:
            print(json.dumps(rep))
        else:
            w, c = rep["with_duplicate_in_train"], rep["without_duplicate_in_train"]
            fmt = lambda d: f"{d['top1']:.4f}" if d["top1"] is not None else "n/a"  # noqa: E731
            print(f"{rep['split']}: {rep['n']} images, top-1 {rep['top1']:.4f}")
            print(f"  with a near-duplicate in train:    {w['n']:5d} images, top-1 {fmt(w)}")
            print(f"  without a near-duplicate in train: {c['n']:5d} images, top-1 {fmt(c)}")
        return 0
    df = select(args.data, args.splits, args.split)
    s, p, y, ok_df, errors = evaluate_frame(model, meta, args.data, df, args.batch_size, device, progress)
    class_ids = meta["class_ids"]
    cm = M.confusion(y, p.argmax(1), len(class_ids))
    confused = [{"true": class_ids[t], "pred": class_ids[q], "count": c} for t, q, c in M.top_confusions(cm, 10)]
    per = pd.DataFrame([{"pokemon_id": int(k), "name": pokedex.display_name(int(k)), **v} for k, v in s["per_class"].items()])
    weakest = per[per["n"] > 0].sort_values(["top1", "n"], ascending=[True, False]).head(10)
    result = {**s, "weights": str(weights), "data": str(args.data), "split": args.split or "all",
              "top_confusions": confused, "unreadable_files": errors}
    by = args.by if args.by is not None else default_by(args.data)
    if by:
        column, groups = read_by(by, args.data)
        result["by"] = {column: accuracy_by(groups, ok_df, p, y)}
    if args.out:
        write_report(args.out, result, per, cm, p, y, ok_df, args.data, class_ids, weakest)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{weights} on {args.data} ({result['split']}): {s['n']} images, {s['unreadable']} unreadable")
    print(f"  top-1 {s['top1']:.4f}  top-5 {s['top5']:.4f}  macro-F1 {s['macro_f1']:.4f}  "
          f"NLL {s['nll']:.4f}  ECE {s['ece']:.4f}")
    print("weakest classes:")
    for r in weakest.itertuples():
        print(f"  {r.name:<12} top-1 {r.top1:.2f} ({r.n} images)")
    print("most confused pairs (true -> predicted):")
    for c in confused:
        print(f"  {pokedex.display_name(c['true'])} -> {pokedex.display_name(c['pred'])}: {c['count']}")
    for column, table in result.get("by", {}).items():
        print(f"by {column}:")
        for k, v in table.items():
            print(f"  {k:<28} top-1 {v['top1']:.4f}  top-5 {v['top5']:.4f}  ({v['n']} images)")
    for e in errors[:20]:
        print(f"  unreadable: {e}")
    if args.out:
        print(f"wrote {args.out}/report.md")
    return 0


def write_report(out: Path, result, per, cm, p, y, ok_df, data_dir, class_ids, weakest) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    atomic_write_csv(out / "per_class.csv", per)
    plot_confusion(cm, class_ids, out / "confusion.png")
    plot_reliability(p, y, out / "reliability.png")
    paths = [safe_image_path(Path(data_dir), n) for n in ok_df["img_name"]]
    plot_top_losses(paths, p, y, class_ids, out / "top_losses.png")
    lines = [f"# Evaluation of `{result['weights']}`", "",
             f"Data: `{result['data']}`, split: **{result['split']}**, {result['n']} images "
             f"({result['unreadable']} unreadable).", "",
             "| top-1 | top-5 | macro-F1 | NLL | ECE (15 bins) |", "|---|---|---|---|---|",
             f"| {result['top1']:.4f} | {result['top5']:.4f} | {result['macro_f1']:.4f} | {result['nll']:.4f} | {result['ece']:.4f} |",
             "", "## Weakest classes", "", "| class | top-1 | images |", "|---|---|---|"]
    lines += [f"| {r.name} | {r.top1:.2f} | {r.n} |" for r in weakest.itertuples()]
    lines += ["", "## Most confused pairs", "", "| true | predicted | images |", "|---|---|---|"]
    lines += [f"| {pokedex.display_name(c['true'])} | {pokedex.display_name(c['pred'])} | {c['count']} |"
              for c in result["top_confusions"]]
    for column, table in result.get("by", {}).items():
        lines += ["", f"## By {column}", "", f"| {column} | images | top-1 | top-5 |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['n']} | {v['top1']:.4f} | {v['top5']:.4f} |" for k, v in table.items()]
    lines += ["", "## Plots", "", "- [Confusion matrix](confusion.png)", "- [Top losses](top_losses.png)",
              "- [Reliability diagram](reliability.png)", "- [Per-class accuracy (CSV)](per_class.csv)", "",
              "![confusion](confusion.png)", "", "![top losses](top_losses.png)", "", "![reliability](reliability.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))


calibrate_doc = """Fit temperature scaling on the validation split and an open-set 'unknown' threshold.

Both are stored in the checkpoint and used by predict/serve. The threshold keeps --keep of the
correct validation predictions above it.

examples:
  pokemon-classifier calibrate --weights runs/x/best.pt --data data/ --splits data/splits.csv
  pokemon-classifier calibrate --weights best.pt --data data/ --splits s.csv --out best_calibrated.pt
"""


def calibrate_arguments(p) -> None:
    p.add_argument("--weights", required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--splits", type=Path)
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--keep", type=float, default=0.95, help="share of correct predictions kept above the threshold")
    p.add_argument("--out", type=Path, help="write here instead of updating --weights in place")
    p.add_argument("--sizes", type=int, nargs="+", metavar="PX",
                   help="also choose the inference crop size among these by top-1 on --split (ties: lower calibrated NLL); "
                        "a model trained on random crops often scores higher a little above its training size")
    p.add_argument("--device", default="auto")


def choose_size(model, meta, paths, y_of, sizes, device, progress=False):
    """Score each inference crop size on labelled images: top-1, ties broken by the NLL after
    temperature scaling, then by the smaller size.

    Returns (best size, scores per size, (probs, errors) of the best size at temperature 1)."""
    scores, outputs = [], {}
    for size in sizes:
        if size < 32:
            raise UserError(f"--sizes: {size} px is too small (32 at least)")
        m = dict(meta, preprocessing=dict(meta["preprocessing"], size=int(size)))
        probs, errors = predict_probs(model, m, paths, device=device, temperature=1.0, progress=progress)
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


def calibrate_main(args) -> int:
    device = _device(args.device)
    ck = read_checkpoint(args.weights)
    if "model" not in ck or "arch" not in ck:
        raise UserError(f"{args.weights}: calibrate needs a pokemon-classifier checkpoint")
    model, meta = model_from_checkpoint(ck, args.weights)
    model.to(device)
    df = select(args.data, args.splits, args.split)
    paths = [safe_image_path(args.data, n) for n in df["img_name"]]
    labels = df["pokemon_id"].map({dex: i for i, dex in enumerate(meta["class_ids"])})
    size_scores = None
    if args.sizes:
        if labels.isna().any():
            raise UserError(f"{args.data}: its {args.split} split has classes this checkpoint does not know")
        size, size_scores, (probs1, errors) = choose_size(
            model, meta, paths, labels.to_numpy(), args.sizes, device, sys.stderr.isatty())
        meta = dict(meta, preprocessing=dict(meta["preprocessing"], size=size))
        ck["preprocessing"] = meta["preprocessing"]
    else:
        probs1, errors = predict_probs(model, meta, paths, device=device, temperature=1.0, progress=sys.stderr.isatty())
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
    out = args.out or Path(args.weights)
    atomic_torch_save(ck, out)
    print(f"temperature {t:.3f} (ECE {ck['calibration']['ece_before']:.4f} -> {ck['calibration']['ece_after']:.4f}); "
          f"unknown below p={thr:.3f} keeps {args.keep:.0%} of correct {args.split} predictions; "
          + (f"inference size {meta['preprocessing']['size']} px; " if size_scores else "") + f"wrote {out}")
    return 0
