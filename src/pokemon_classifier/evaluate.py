"""Honest evaluation: metrics, and how much near-duplicates inflate the score.

    pokemon-classifier evaluate --weights best.pt --data data/ --splits data/splits.csv --split test --out report/
    pokemon-classifier evaluate --weights best.pt --data other_testset/ --json      # every image listed
    pokemon-classifier evaluate --weights best.pt --data data/ --splits data/splits.csv --leak-report
    pokemon-classifier evaluate --weights model.onnx --data data/ --split test      # the ONNX export
    pokemon-classifier evaluate ... --by data/manifest.csv:kind    # accuracy per source kind
    pokemon-classifier evaluate ... --negatives negatives/ --styles styles/   # new species out, new styles in

Works with our checkpoints, their ONNX exports and the original project's (1000-way
mobilenet_v3_large state_dict). Unreadable images are counted and listed, never fatal. When
DATA/manifest.csv has a `kind` column (the shared data's does: scraped photos vs game sprites) the
accuracy per kind is reported too. `--styles DIR` (Gen-1 pictures in other drawing styles, made by
tools/make_styles.py: annotations.csv + a `kind` column) adds the share of each style the verdict
accepts and its top-1: a new style of the 151 must be kept while `--negatives` turns new species
away. The plots and report.md are drawn by report.py; temperature and
threshold fitting live in calibrate.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pokemon_classifier import metrics as M
from pokemon_classifier import pokedex
from pokemon_classifier.annotations import MANIFEST, read_annotations, safe_image_path
from pokemon_classifier.errors import UserError
from pokemon_classifier.runtime import DEVICE_HELP


@dataclass
class Evaluation:
    """What evaluate_frame measured: the summary, and the readable rows behind it."""

    summary: dict  # M.summary + unreadable + per_class
    probs: np.ndarray  # (n readable, C)
    y: np.ndarray  # class indices of the readable rows
    rows: pd.DataFrame  # the readable rows of the evaluated frame
    errors: list[str] = field(default_factory=list)  # '<file>: <reason>' of the unreadable ones
    scores: np.ndarray | None = None  # open-set scores of the readable rows (None: the model has none)


def select(data_dir, splits_path=None, split=None) -> pd.DataFrame:
    df = read_annotations(data_dir, purpose="evaluate")
    if split:
        from pokemon_classifier.splits import SPLITS_CSV, read_splits

        path = Path(splits_path) if splits_path else Path(data_dir) / SPLITS_CSV
        sp = read_splits(path)
        df = df.merge(sp, on="img_name", how="inner")
        df = df[df["split"] == split]
        if df.empty:
            raise UserError(f"{path}: no images in split {split!r}")
    return df.reset_index(drop=True)


def evaluate_frame(clf, data_dir, df, batch_size=64, progress=True) -> Evaluation:
    """Evaluate a predict.Classifier (checkpoint or ONNX) on the rows of `df` (img_name, pokemon_id)."""
    index_of = {dex: i for i, dex in enumerate(clf.class_ids)}
    unknown = sorted(int(i) for i in set(df["pokemon_id"]) - set(index_of))  # int: no np.int64(..) in the message
    if unknown:
        raise UserError(f"{Path(data_dir) / 'annotations.csv'}: dex ids {unknown} are not among the model's classes")
    paths = [safe_image_path(Path(data_dir), n) for n in df["img_name"]]
    probs, scores, errors = clf.outputs_paths(paths, batch_size, progress=progress, desc="evaluating")
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
    return Evaluation(s, p, y, df[ok].reset_index(drop=True), [errors[i] for i in sorted(errors)],
                      None if scores is None else scores[ok])


def open_set_section(clf, ev: Evaluation, negatives_dir, batch_size=64, progress=True) -> tuple[dict, dict]:
    """evaluate --negatives: the open-set figures of the evaluated images against the negatives the
    checkpoint was not tuned on plus generated degenerate pictures (a seed calibrate never uses).

    Returns (figures for the report/JSON, the raw scores for the plot)."""
    from pokemon_classifier import openset

    scores, kinds, excluded, unreadable = reporting_negative_scores(clf, negatives_dir, batch_size, progress)
    fig = openset.rates(ev.scores, scores, kinds, clf.open_set_threshold)
    accepted = np.array([not clf.is_unknown(p, s) for p, s in zip(ev.probs, ev.scores)], dtype=bool)
    correct = ev.probs.argmax(1) == ev.y
    fig.update(negatives=str(negatives_dir), excluded_tuning=excluded, unreadable_negatives=unreadable,
               top1_accepted=float(correct[accepted].mean()) if accepted.any() else None,
               accepted_all_rules=float(accepted.mean()))
    return fig, {"in": ev.scores, "out": scores, "kinds": kinds}


def reporting_negative_scores(clf, negatives_dir, batch_size=64, progress=True) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(open-set scores, kinds) of the negatives the checkpoint was not tuned on (by content hash) plus
    generated degenerate pictures of the reporting seed (2; calibrate uses 1), readable ones only;
    and how many files were left out as tuning negatives and how many could not be read."""
    from pokemon_classifier import openset

    if not clf.open_set:
        raise UserError(f"{clf.meta.get('source', 'the model')}: has no open-set score; fit one with "
                        f"`pokemon-classifier calibrate --weights W --data DATA --negatives DIR`")
    table = openset.read_negatives(negatives_dir)
    tuned = set(clf.open_set.get("tuned_on", []))
    seen = np.array([openset.file_key(p) in tuned for p in table["path"]], dtype=bool)
    table = table[~seen].reset_index(drop=True)
    degenerate, _ = openset.degenerate_set(10, seed=2)
    items = list(table["path"]) + degenerate
    kinds = np.array(list(table["kind"]) + ["degenerate (generated)"] * len(degenerate))
    _, scores, errors = clf.outputs_paths(items, batch_size, progress=progress, desc="negatives")
    ok = np.array([i not in errors for i in range(len(items))], dtype=bool)
    return scores[ok], kinds[ok], int(seen.sum()), len(errors)


def read_styles(styles_dir) -> pd.DataFrame:
    """STYLES/annotations.csv (img_name, pokemon_id) with each row's `kind` from its own `kind` column
    or from STYLES/manifest.csv (img_name,kind) as for negatives; 'style' where neither names one."""
    styles_dir = Path(styles_dir)
    if not styles_dir.is_dir():
        raise UserError(f"{styles_dir}: styles folder not found")
    df = read_annotations(styles_dir, purpose="evaluate")
    from pokemon_classifier.fileio import read_csv_input

    kinds = pd.Series(dtype=str)
    for path in (styles_dir / "annotations.csv", styles_dir / MANIFEST):
        t = read_csv_input(path, "styles table") if path.is_file() else pd.DataFrame()
        if {"img_name", "kind"} <= set(t.columns):
            kinds = t.drop_duplicates("img_name").set_index("img_name")["kind"]
            break
    df["kind"] = df["img_name"].map(kinds).fillna("style").replace("", "style")
    return df


def styles_section(clf, styles_dir, batch_size=64, progress=True) -> dict:
    """evaluate --styles: per style kind (and over all), how many pictures, the share the verdict
    accepts (not "unknown": the open-set score, or the top-probability floor without one), top-1 on
    all of them and on the accepted ones."""
    df = read_styles(styles_dir)
    ev = evaluate_frame(clf, styles_dir, df, batch_size, progress)
    scores = ev.scores if ev.scores is not None else [None] * len(ev.y)
    accepted = np.array([not clf.is_unknown(p, s) for p, s in zip(ev.probs, scores)], dtype=bool)
    correct = ev.probs.argmax(1) == ev.y
    kinds = ev.rows["kind"].to_numpy()

    def figures(m):
        a = m & accepted
        return {"n": int(m.sum()), "accepted": float(accepted[m].mean()), "top1": float(correct[m].mean()),
                "top5": M.topk_accuracy(ev.probs[m], ev.y[m], 5),
                "top1_accepted": float(correct[a].mean()) if a.any() else None}

    per = {str(k): figures(kinds == k) for k in sorted(set(kinds))}
    return {"styles": str(styles_dir), "unreadable": len(ev.errors), "open_set": clf.open_set is not None,
            "kinds": per, "all": figures(np.ones(len(kinds), bool))}


def read_by(spec: str, data_dir) -> tuple[str, pd.Series]:
    """'FILE.csv:COLUMN' -> (COLUMN, Series img_name -> group). FILE defaults to DATA/manifest.csv."""
    path, _, column = spec.rpartition(":")
    path = Path(path) if path else Path(data_dir) / MANIFEST
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
    manifest = Path(data_dir) / MANIFEST
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


# ---------------------------------------------------------------- leak measurement

def leak_measures(data_dir, df_all: pd.DataFrame, splits: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """For images of `split`: leaked under the merged groups ('any'), the hash and the embedding measure."""
    from pokemon_classifier import dedup
    from pokemon_classifier.splits import leaks_by_measure

    groups = dedup.find_groups(data_dir, df_all, progress=False).merge(splits, on="img_name")
    leaks = leaks_by_measure(groups, groups["split"])
    part = (groups["split"] == split).to_numpy()
    return leaks[part].set_axis(groups["img_name"].to_numpy()[part])


def leak_report(clf, data_dir, splits_path, split="test", batch_size=64, progress=True) -> dict:
    from pokemon_classifier.splits import read_splits

    df_all = read_annotations(data_dir)
    sp = read_splits(splits_path, df_all)
    measures = leak_measures(data_dir, df_all, sp, split)
    leaked = measures["any"]
    df = df_all.merge(sp, on="img_name")
    df = df[df["split"] == split].reset_index(drop=True)
    ev = evaluate_frame(clf, data_dir, df, batch_size, progress)
    mask = leaked.reindex(ev.rows["img_name"]).to_numpy(dtype=bool)
    correct = ev.probs.argmax(1) == ev.y
    return {"split": split, "n": int(len(ev.y)), "top1": float(correct.mean()),
            "with_duplicate_in_train": {"n": int(mask.sum()), "top1": float(correct[mask].mean()) if mask.any() else None},
            "without_duplicate_in_train": {"n": int((~mask).sum()), "top1": float(correct[~mask].mean()) if (~mask).any() else None},
            "by_measure": {m: int(measures[m].sum()) for m in measures.columns if m != "any"},
            "leaked_images": sorted(measures.index[measures["any"].to_numpy()])}


# ---------------------------------------------------------------- CLI

def add_arguments(p) -> None:
    from pokemon_classifier.fileio import out_dir
    from pokemon_classifier.runtime import positive_int

    p.add_argument("--weights", help="checkpoint or .onnx export (default: best.pt at the repository root)")
    p.add_argument("--data", type=Path, required=True, help="folder with annotations.csv + images/")
    p.add_argument("--splits", type=Path, help="splits.csv (default: DATA/splits.csv when --split is given)")
    p.add_argument("--split", choices=["train", "val", "test"], help="evaluate only this split (default: every image)")
    p.add_argument("--out", type=out_dir, help="report folder: metrics.json, per_class.csv, PNG plots, report.md")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--leak-report", action="store_true",
                   help="accuracy on test images with vs without a near-duplicate in train")
    p.add_argument("--by", metavar="FILE.csv:COLUMN",
                   help="also report accuracy per value of COLUMN, joined on img_name "
                        "(default: DATA/manifest.csv:kind when that file has a kind column)")
    p.add_argument("--negatives", type=Path, metavar="DIR",
                   help="add the open-set section: pictures that are not Gen-1 Pokemon (a manifest.csv "
                        "`kind` column splits the rates); the ones calibrate tuned on are left out")
    p.add_argument("--styles", type=Path, metavar="DIR",
                   help="add the styles section: Gen-1 pictures in other drawing styles (annotations.csv + a `kind` "
                        "column; tools/make_styles.py makes one), the share accepted and top-1 per kind")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--no-progress", dest="progress", action="store_false")


def main(args) -> int:
    from pokemon_classifier.models import resolve_weights
    from pokemon_classifier.predict import Classifier

    weights = resolve_weights(args.weights)
    clf = Classifier.load(weights, device=args.device)
    progress = args.progress and not args.json and sys.stderr.isatty()
    if args.leak_report:
        from pokemon_classifier.splits import SPLITS_CSV

        splits = args.splits or args.data / SPLITS_CSV
        rep = leak_report(clf, args.data, splits, args.split or "test", args.batch_size, progress)
        if args.json:
            print(json.dumps(rep))
        else:
            w, c = rep["with_duplicate_in_train"], rep["without_duplicate_in_train"]
            fmt = lambda d: f"{d['top1']:.4f}" if d["top1"] is not None else "n/a"  # noqa: E731
            print(f"{rep['split']}: {rep['n']} images, top-1 {rep['top1']:.4f}")
            print(f"  with a near-duplicate in train:    {w['n']:5d} images, top-1 {fmt(w)}")
            print(f"  without a near-duplicate in train: {c['n']:5d} images, top-1 {fmt(c)}")
            print("  near-duplicate measures: " + ", ".join(f"{m} {k}" for m, k in rep["by_measure"].items())
                  + " (merged groups: pHash incl. crosswise + embedding cosine; see `dedup`)")
        return 0
    report, raw_scores = measure(clf, weights, args, progress)
    if args.out:
        from pokemon_classifier.report import write_report

        write_report(args.out, report)
        if raw_scores is not None:
            from pokemon_classifier.openset import plot_scores

            plot_scores(raw_scores["in"], raw_scores["out"], raw_scores["kinds"], clf.open_set_threshold,
                        args.out / "open_set_scores.png")
    if args.json:
        print(json.dumps(report.result))
        return 0
    print_summary(report, args.out)
    return 0


def measure(clf, weights, args, progress: bool):
    """(report.Report, the raw open-set scores or None) of `evaluate` on the selected rows."""
    from pokemon_classifier.report import Report

    df = select(args.data, args.splits, args.split)
    ev = evaluate_frame(clf, args.data, df, args.batch_size, progress)
    s, p, y, ok_df, errors = ev.summary, ev.probs, ev.y, ev.rows, ev.errors
    class_ids = clf.class_ids
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
    raw_scores = None
    if args.negatives:
        result["open_set"], raw_scores = open_set_section(clf, ev, args.negatives, args.batch_size, progress)
    if args.styles:
        result["styles"] = styles_section(clf, args.styles, args.batch_size, progress)
    return Report(result, per, cm, p, y, ok_df, args.data, class_ids, weakest), raw_scores


def print_summary(report, out: Path | None) -> None:
    """The command's text output (--json prints report.result instead)."""
    result, weakest = report.result, report.weakest
    s, confused, errors, weights = result, result["top_confusions"], result["unreadable_files"], result["weights"]
    print(f"{weights} on {result['data']} ({result['split']}): {s['n']} images, {s['unreadable']} unreadable")
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
    if "open_set" in result:
        o = result["open_set"]
        print(f"open set (negatives: {o['negatives']}, {o['excluded_tuning']} used for tuning left out): "
              f"AUROC {o['auroc']:.4f}  FPR at 95% TPR {o['fpr_at_95_tpr']:.4f}")
        print(f"  at the threshold {o['threshold']:.3f}: {o['in_accepted']:.1%} of these {o['n_in']} Gen-1 images "
              f"accepted, top-1 on the accepted {o['top1_accepted']:.4f}")
        for k, v in o["rejected"].items():
            print(f"  {k:<28} rejected {v['rate']:.1%} ({v['n']} images)")
    if "styles" in result:
        st = result["styles"]
        print(f"styles ({st['styles']}, {st['unreadable']} unreadable): share accepted as a Gen-1 Pokemon, top-1")
        for k, v in {**st["kinds"], "all": st["all"]}.items():
            print(f"  {k:<28} accepted {v['accepted']:.1%}  top-1 {v['top1']:.4f}  top-5 {v['top5']:.4f}  ({v['n']} images)")
    for e in errors[:20]:
        print(f"  unreadable: {e}")
    if out:
        print(f"wrote {out}/report.md")
