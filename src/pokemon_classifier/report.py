"""The evaluation report: confusion matrix, reliability diagram, top losses and report.md.

    pokemon-classifier evaluate --weights best.pt --data data/ --split test --out report/   # writes these

Plots are matplotlib PNGs drawn without pyplot (fileio.subplots), so a notebook's backend is left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pokemon_classifier import metrics as M
from pokemon_classifier import pokedex
from pokemon_classifier.annotations import safe_image_path
from pokemon_classifier.errors import ImageError
from pokemon_classifier.fileio import atomic_savefig, atomic_write_csv, atomic_write_text, subplots
from pokemon_classifier.images import load_image


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


@dataclass
class Report:
    """What `evaluate --out` writes: the figures of one evaluation and what they were measured on."""

    result: dict  # metrics.json: the summary, weights, data, split, top confusions, by, open_set, styles
    per: pd.DataFrame  # per_class.csv
    cm: np.ndarray  # confusion matrix (true, predicted)
    p: np.ndarray  # probabilities of the readable rows
    y: np.ndarray  # their labels (class indices)
    ok_df: pd.DataFrame  # the readable rows (img_name)
    data_dir: Path
    class_ids: list[int]
    weakest: pd.DataFrame  # the rows of `per` the report lists first


def write_report(out: Path, report: Report) -> None:
    result, per, cm, p, y, ok_df = report.result, report.per, report.cm, report.p, report.y, report.ok_df
    data_dir, class_ids, weakest = report.data_dir, report.class_ids, report.weakest
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
    o = result.get("open_set")
    if o:
        lines += ["", "## Open set (pictures that are not Gen-1 Pokémon)", "",
                  f"Negatives: `{o['negatives']}` ({o['excluded_tuning']} used by calibrate left out) plus generated "
                  f"degenerate pictures. AUROC **{o['auroc']:.4f}**, FPR at 95% TPR {o['fpr_at_95_tpr']:.4f}. At the "
                  f"checkpoint's threshold ({o['threshold']:.3f}) **{o['in_accepted']:.1%}** of the {o['n_in']} Gen-1 "
                  f"images are accepted (top-1 on them {o['top1_accepted']:.4f}).", "",
                  "| kind | images | rejected |", "|---|---|---|"]
        lines += [f"| {k} | {v['n']} | {v['rate']:.1%} |" for k, v in o["rejected"].items()]
        lines += ["", "![open-set scores](open_set_scores.png)"]
    st = result.get("styles")
    if st:
        lines += ["", "## Styles (Gen-1 Pokémon in other drawing styles)", "",
                  f"Pictures: `{st['styles']}` ({st['unreadable']} unreadable). A new style of the 151 should be "
                  "accepted (not \"unknown\") and named right.", "",
                  "| style | images | accepted | top-1 | top-5 | top-1 of the accepted |", "|---|---|---|---|---|---|"]
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines += [f"| {k} | {v['n']} | {v['accepted']:.1%} | {v['top1']:.4f} | {v['top5']:.4f} | {fmt(v['top1_accepted'])} |"
                  for k, v in {**st["kinds"], "all": st["all"]}.items()]
    lines += ["", "## Plots", "", "- [Confusion matrix](confusion.png)", "- [Top losses](top_losses.png)",
              "- [Reliability diagram](reliability.png)", "- [Per-class accuracy (CSV)](per_class.csv)", "",
              "![confusion](confusion.png)", "", "![top losses](top_losses.png)", "", "![reliability](reliability.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
