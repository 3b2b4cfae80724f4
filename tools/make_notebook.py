"""python tools/make_notebook.py [--execute]  ->  train.ipynb

Without --execute the notebook is written unexecuted. With --execute it is run from the repository
root (quick mode, on the shared data when ../shared/data/pokemon is there) and written with its
outputs, except the figures that show pictures of the shared data set (cells tagged
`dataset-pictures`), which must not go into the repository: their images are replaced by a note.
Run it with a fresh cache (POKEMON_CLASSIFIER_CACHE=$(mktemp -d)) so the timings it prints are
those of a first run.

The notebook is generated so that its code stays reviewable as plain Python here;
tests/test_notebook.py checks that the committed train.ipynb has exactly the cells build() makes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "train.ipynb"
TAG = "dataset-pictures"  # cells whose outputs show images of the shared data: never committed
NOTE = ("[figure of dataset pictures not stored in the repository (the shared images are not ours to "
        "redistribute); run the notebook to see it]\n")


def build() -> nbf.NotebookNode:
    """The notebook, unexecuted."""
    cells = []

    def md(src: str) -> None:
        cells.append(nbf.v4.new_markdown_cell(src.strip()))

    def code(src: str, dataset_pictures: bool = False) -> None:
        cell = nbf.v4.new_code_cell(src.strip())
        if dataset_pictures:
            cell.metadata["tags"] = [TAG]
        cells.append(cell)

    md(r"""
# Pokémon classifier: from images to an honest test score

This notebook walks the whole workflow with the `pokemon_classifier` package: explore the data,
build a **group-aware split** and measure what a random split would leak, **train**, average
runs into a **model soup**, **calibrate** it, **evaluate** it on the test split with plots, and
**predict**. It defines no model of its own: every step is a package function or a
`pokemon-classifier` command, so what you see here is what the command line does.

It runs in one of two modes, chosen in the first cell:

* **quick** (the default; a few minutes on a 2-core CPU, most of it spent running the backbone;
  the committed outputs come from it): you watch a model learn. The ImageNet-pretrained EfficientNet-Lite0 backbone turns a subset of
  the pictures (8 per class for training, 1 for validation, 2 for test) into 1,280 numbers each,
  once; then a fresh 151-way linear layer on top of those features is trained for 15 epochs with
  the package's own training loop, loss and schedule. It ends far above chance (1 in 151) but
  far below the shipped model: only the last layer learns, from 8 pictures per class.
* **full** (`FULL = True`, or `POKEMON_NOTEBOOK_FULL=1` in the environment): the real recipe on
  all the data: two `pokemon-classifier train --config configs/shipped.yaml` runs (about 13
  minutes each on 2 CPU cores), their soup, calibration with a choice of crop size, and the
  evaluation on the whole test split.

The data is `../shared/data/pokemon` when it is there (run the notebook from the repository
root). Without it the notebook generates a small synthetic set of coloured shapes (6 classes,
`pokemon_classifier.synthetic`) and runs the same steps on it, so it always runs top to bottom.
`POKEMON_NOTEBOOK_DATA` picks another folder (or `synthetic`).
""")
    code(r"""
import json
import os
import time
import warnings
from pathlib import Path

# True: the shipped recipe on all the data (two 10-epoch runs, ~30 min on 2 CPU cores); False: quick mode
FULL = os.environ.get("POKEMON_NOTEBOOK_FULL", "0") == "1"

%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image, display

from pokemon_classifier import annotations, dedup, pokedex, splits
from pokemon_classifier.cli import main as cli
from pokemon_classifier.synthetic import make_dataset

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bars are off anyway
T0 = time.perf_counter()
ROOT = Path.cwd()  # the repository (configs/); run the notebook from there
WORK = Path(os.environ.get("POKEMON_NOTEBOOK_WORK", "nb_work"))  # all this notebook writes (git-ignored)
WORK.mkdir(parents=True, exist_ok=True)
SHARED = Path("../shared/data/pokemon")
choice = os.environ.get("POKEMON_NOTEBOOK_DATA", "")
SYNTHETIC = choice == "synthetic" or (not choice and not (SHARED / "annotations.csv").is_file())
DATA = make_dataset(WORK / "synthetic", per_class=16) if SYNTHETIC else Path(choice or SHARED)
print("mode:", "FULL (the shipped recipe)" if FULL else "quick (a linear head on cached backbone features)")
print("data:", DATA, "(synthetic shapes)" if SYNTHETIC else "")
""")
    md(r"""
## 1. Explore the data
Images per class (the original project's overview), image sizes, and a few pictures.
""")
    code(r"""
df = annotations.read_annotations(DATA)
counts = annotations.class_counts(df)
present = counts[counts > 0]
print(f"{len(df)} images, {len(present)} classes; median {int(present.median())} per class")
print("fewest:", ", ".join(f"{pokedex.display_name(i)} {n}" for i, n in present.head(5).items()))
annotations.plot_class_counts(present if SYNTHETIC else counts, WORK / "class_counts.png", 15)
display(Image(filename=str(WORK / "class_counts.png"), width=900))
""")
    code(r"""
from pokemon_classifier.images import image_size

sample = df.sample(min(400, len(df)), random_state=0)
sizes = np.array([image_size(DATA / "images" / n) for n in sample["img_name"]])
fig, ax = plt.subplots(figsize=(5, 3))
ax.hist(sizes.max(1), bins=30)
ax.set_xlabel("longer side (px)"); ax.set_ylabel("images"); ax.set_title("Image sizes (sample)")
plt.show()
""")
    md(r"""
The next figure shows twelve pictures as the model sees them (resized, centre-cropped). It is
left out of the committed notebook, because the shared pictures are not ours to redistribute:
run the notebook to see it.
""")
    code(r"""
import torch
from torchvision.utils import make_grid

from pokemon_classifier.data import ImageDataset
from pokemon_classifier.models import preprocessing
from pokemon_classifier.presets import eval_transform

pre = preprocessing("efficientnet_lite0", 96)
ds = ImageDataset(DATA, eval_transform(pre), df.sample(12, random_state=1))
xs, ys = zip(*[ds[i] for i in range(len(ds))])
grid = make_grid(torch.stack(xs) * 0.5 + 0.5, nrow=6)
fig, ax = plt.subplots(figsize=(9, 3.4))
ax.imshow(grid.permute(1, 2, 0).clamp(0, 1)); ax.axis("off")
ax.set_title(" | ".join(pokedex.display_name(y + 1) for y in ys), fontsize=7)
plt.show()
""", dataset_pictures=True)
    md(r"""
## 2. A split that does not leak
Near-duplicate pictures (the same artwork re-encoded, resized or re-framed) are grouped by
perceptual hash; each group goes wholly into one split. The leak report counts validation/test
images that have a near-duplicate in train — the effect that inflated the original 99.93%.
""")
    code(r"""
groups = dedup.find_groups(DATA, df, progress=False)
s = dedup.summarize(groups)
print(f"{s['groups']} near-duplicate groups holding {s['images_in_groups']} images; "
      f"{s['cross_class_groups']} groups span two classes")
group_split = splits.make_splits(groups, seed=0)
random_split = splits.make_splits(groups, seed=0, random=True)
print("group-aware:", splits.format_leak(splits.leak_report(groups, group_split["split"])))
print("random     :", splits.format_leak(splits.leak_report(groups, random_split["split"])))
group_split.to_csv(WORK / "splits.csv", index=False)
group_split["split"].value_counts()
""")
    md(r"""
## 3. Train

**Quick mode** keeps the split but takes a subset of it: 8 training, 1 validation and 2 test
pictures per class, drawn from the group-aware split above (so no test picture has a
near-duplicate in train). **Full mode** uses all of it.
""")
    code(r"""
PER_CLASS = {"train": 8, "val": 1, "test": 2}  # quick mode, pictures per class and split
labelled = df.merge(group_split, on="img_name")
if FULL or SYNTHETIC:  # the synthetic set is small already
    sub = labelled
else:
    shuffled = labelled.sample(frac=1, random_state=0)
    sub = pd.concat([shuffled[shuffled["split"] == s].groupby("pokemon_id").head(n) for s, n in PER_CLASS.items()])
sub = sub.sort_values("img_name").reset_index(drop=True)
SPLITS = WORK / ("splits.csv" if FULL else "quick_splits.csv")  # what soup, calibrate and evaluate read
sub[["img_name", "split", "kind"]].to_csv(SPLITS, index=False)
N_CLASSES = sub["pokemon_id"].nunique()
CHANCE = 1 / N_CLASSES  # top-1 of a guess among the classes present
print(sub["split"].value_counts().to_dict(), f"images of {N_CLASSES} classes; chance top-1 = 1/{N_CLASSES} = {CHANCE:.4f}")
""")
    md(r"""
### Quick mode: a linear head on cached backbone features

A network pretrained on ImageNet already turns a picture into a useful description: the 1,280
numbers its last layer sees (its *features*). `features.extract_features` runs the frozen
EfficientNet-Lite0 backbone once over the training and validation pictures (224 px) and caches
the result on disk, keyed by the files' content; this is the slow part (about a minute on 2 free
cores, longer on a busy machine; instant the second time, as in the committed output).

Training then touches only a fresh 151-way linear layer, `model.classifier`, so an epoch is a
matter of seconds, most of them spent writing the checkpoints. It uses the package's own pieces, which `pokemon-classifier train` runs too:
`train_one_epoch` and `evaluate` (one pass over the data, loss and top-1), cross-entropy with
label smoothing 0.1, Adam, `ExponentialLR(0.9)` stepped per epoch, and the `CheckpointSaver`,
which keeps the epoch of lowest validation loss in `best.pt` and writes `metrics.csv` and
`curves.png`. Because the head *is* the model's classifier, `best.pt` is a complete
EfficientNet-Lite0 checkpoint (ImageNet backbone + trained head) that `soup`, `calibrate`,
`evaluate` and `predict` load like any other.

Two heads are trained: the same initialisation (like `train --init-seed`), different data order
(`--seed`), the ingredients of the soup in section 4.
""")
    code(r"""
if not FULL:
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from pokemon_classifier import train as T
    from pokemon_classifier.data import fingerprint
    from pokemon_classifier.features import extract_features
    from pokemon_classifier.models import build_model, preprocessing

    seen = sub[sub["split"] != "test"].reset_index(drop=True)  # the test pictures stay unseen until section 6
    t = time.perf_counter()
    X = torch.from_numpy(np.array(extract_features(DATA, seen, progress=False)))
    Y = torch.tensor(seen["pokemon_id"].to_numpy() - 1)
    print(f"features of {len(seen)} pictures: {tuple(X.shape)} in {time.perf_counter() - t:.0f} s")
    is_train, is_val = torch.tensor((seen["split"] == "train").to_numpy()), torch.tensor((seen["split"] == "val").to_numpy())
""")
    code(r"""
# configs/shipped.yaml's loss and schedule; a larger learning rate suits a lone linear layer
HEAD = dict(epochs=15, lr=3e-3, gamma=0.9, label_smoothing=0.1, batch_size=64)


def train_head(seed: int, out: Path) -> pd.DataFrame:
    torch.manual_seed(0)  # the head's initialisation, shared by the soup ingredients
    model = build_model("efficientnet_lite0", pretrained=True)  # ImageNet backbone, new 151-way model.classifier
    opt = torch.optim.Adam(model.classifier.parameters(), lr=HEAD["lr"])
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=HEAD["gamma"])
    loss = nn.CrossEntropyLoss(label_smoothing=HEAD["label_smoothing"])
    order = torch.Generator().manual_seed(seed)  # the ingredients differ in data order only
    train_dl = DataLoader(TensorDataset(X[is_train], Y[is_train]), HEAD["batch_size"], shuffle=True, generator=order)
    val_dl = DataLoader(TensorDataset(X[is_val], Y[is_val]), 256)
    meta = {"arch": "efficientnet_lite0", "class_ids": list(pokedex.IDS), "names": [pokedex.name(i) for i in pokedex.IDS],
            "preprocessing": preprocessing("efficientnet_lite0"), "args": {"recipe": "linear head on cached features",
            "seed": seed, **HEAD}, "data_fingerprint": fingerprint(DATA, seen), "versions": T.library_versions(),
            "split": "group-aware", "split_file": str(SPLITS)}
    saver = T.CheckpointSaver(out, model, opt, sched, meta)  # best.pt, last.pt, metrics.csv, curves.png
    cpu = torch.device("cpu")
    for epoch in range(1, HEAD["epochs"] + 1):
        lr = opt.param_groups[0]["lr"]
        m = T.train_one_epoch(model.classifier, train_dl, loss, opt, cpu, T.EpochOptions(progress=False))
        m.update(T.evaluate(model.classifier, val_dl, loss, cpu, amp=False, channels_last=False, progress=False))
        sched.step()
        saver.update({"epoch": epoch, "lr": lr, **m})
    return pd.DataFrame(saver.history)


if not FULL:
    t = time.perf_counter()
    RUNS = [WORK / "quick" / f"head_seed{seed}" for seed in (0, 1)]
    hist = [train_head(seed, run) for seed, run in zip((0, 1), RUNS)]
    print(f"2 heads x {HEAD['epochs']} epochs in {time.perf_counter() - t:.0f} s; seed 0:")
    print(hist[0][["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"]].round(4).to_string(index=False))
""")
    md(r"""
### Full mode: the shipped recipe

The same two ingredients, the real way: the whole network is fine-tuned (stem and first two
stages frozen) on random 192 px crops with the `style` augmentation, 10 epochs, as
`configs/shipped.yaml` says. The shipped `best.pt` (v2.1) is the weight average of two such runs
(`retro` augmentation, 14 epochs, seeds 4 and 5, trained on train + 30% of val + FireRed/LeafGreen
sprites; the greedy soup kept both; the exact commands are in `MODEL_CARD.md`). In quick mode this cell only
prints the commands.
""")
    code(r"""
FULL_RUNS = [WORK / "full" / f"seed{seed}" for seed in (0, 1)]
commands = [["train", "--config", "configs/shipped.yaml", "--data", DATA, "--splits", WORK / "splits.csv",
             "--out", run, "--seed", seed, "--init-seed", 0, "--no-progress"] for seed, run in zip((0, 1), FULL_RUNS)]
for cmd in commands:
    print("pokemon-classifier", *cmd)
    if FULL:
        assert cli([str(a) for a in cmd]) == 0
if FULL:
    RUNS = FULL_RUNS
    hist = [pd.read_csv(run / "metrics.csv") for run in RUNS]
""")
    md(r"""
### The learning curves

Loss falls and accuracy climbs from chance within a few epochs. Training accuracy runs ahead of
validation accuracy: the head can nearly memorise its few training pictures, and the gap is what
it has not learnt to generalise. The checkpoint kept is the epoch of lowest **validation loss**
(the dashed line), not the last one.
""")
    code(r"""
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
for seed, h, colour in zip((0, 1), hist, ("C0", "C1")):
    a.plot(h["epoch"], h["train_loss"], "o--", ms=3, color=colour, alpha=0.6, label=f"train, seed {seed}")
    a.plot(h["epoch"], h["val_loss"], "o-", ms=3, color=colour, label=f"val, seed {seed}")
    b.plot(h["epoch"], h["train_acc"], "o--", ms=3, color=colour, alpha=0.6, label=f"train, seed {seed}")
    b.plot(h["epoch"], h["val_acc"], "o-", ms=3, color=colour, label=f"val, seed {seed}")
best = hist[0].loc[hist[0]["val_loss"].idxmin()]
for ax in (a, b):
    ax.axvline(best["epoch"], color="grey", ls="--", lw=0.8)
b.axhline(CHANCE, color="k", ls=":", lw=1, label=f"chance (1/{N_CLASSES})")
a.set(xlabel="epoch", ylabel="cross-entropy (label smoothing 0.1)", title="loss")
b.set(xlabel="epoch", ylabel="top-1", ylim=(0, 1.02), title="accuracy")
a.legend(fontsize=7); b.legend(fontsize=7)
plt.tight_layout(); plt.show()
print(f"seed 0: val top-1 {hist[0]['val_acc'].iloc[0]:.3f} after epoch 1, {best['val_acc']:.3f} at the kept epoch "
      f"{int(best['epoch'])} ({best['val_acc'] / CHANCE:.0f}x chance)")
""")
    md(r"""
## 4. Soup: average the runs' weights

A **model soup** (Wortsman et al. 2022) averages the weights of runs fine-tuned from the same
initialisation; the result is one model, no slower than each ingredient, and often better.
`pokemon-classifier soup` with `--data` is *greedy*: it scores every ingredient on the
validation split, then adds them best first, keeping each only if the soup's validation top-1
does not drop, so test stays untouched.

In quick mode the ingredients share their frozen backbone, so the soup is simply the average of
the two heads; for a linear layer trained on the same features the two runs end close together,
and the soup gains little or nothing (the greedy soup may keep a single head). With fine-tuned
networks it does better: the first shipped soup beat each of its runs on validation by 0.3 to
1 point (`docs/results.md`).
""")
    code(r"""
OUT = WORK / ("full" if FULL else "quick")
SOUP, FINAL = OUT / "soup.pt", OUT / "calibrated.pt"
assert cli(["soup", *[str(run / "best.pt") for run in RUNS], "--data", str(DATA), "--splits", str(SPLITS),
            "--out", str(SOUP), "--no-progress"]) == 0
""")
    md(r"""
## 5. Calibrate: honest probabilities and an "unknown" answer

A network's top probability is usually not the chance that it is right. `calibrate` fits one
**temperature** T on the validation split (probabilities = softmax(logits / T), T chosen to
minimise the validation negative log-likelihood) and an **unknown threshold**: below it the
answer is `unknown` (the threshold keeps 95% of the correct validation answers above it). Both
are stored in the checkpoint and used by `predict`, the app and the API. In full mode it also
chooses the inference crop size on validation (`--sizes`); ECE is the expected calibration
error (0 = confidence matches accuracy).
""")
    code(r"""
sizes = ["--sizes", "192", "208", "224"] if FULL else []
assert cli(["calibrate", "--weights", str(SOUP), "--data", str(DATA), "--splits", str(SPLITS), "--out", str(FINAL), *sizes]) == 0
""")
    md(r"""
## 6. Evaluate on the test split

The test pictures were not used for anything so far. `evaluate` reports top-1 and top-5
accuracy, macro-F1, NLL and ECE, the weakest classes and the most confused pairs, and the
accuracy by kind of picture (scraped photos and art vs game sprites, from the data's
`manifest.csv`), and writes plots. In quick mode the test set is 2 pictures per class, so the
figure is rough (± about 3 points); the shipped model's figures on the whole test split are in
`MODEL_CARD.md`.
""")
    code(r"""
REPORT = OUT / "report"
assert cli(["evaluate", "--weights", str(FINAL), "--data", str(DATA), "--splits", str(SPLITS), "--split", "test",
            "--out", str(REPORT), "--no-progress"]) == 0
""")
    md(r"""
The reliability diagram bins test predictions by confidence: bars on the diagonal mean that
"70% sure" is right 70% of the time. Then the per-class accuracy, worst classes first: where the
head fails (in quick mode, often the grey Game Boy sprites and look-alike evolutions).
""")
    code(r"""
display(Image(filename=str(REPORT / "reliability.png"), width=340))
per = pd.read_csv(REPORT / "per_class.csv").sort_values(["top1", "n"], ascending=[True, False])
fig, ax = plt.subplots(figsize=(11, 2.8))
ax.bar(range(len(per)), per["top1"], width=1.0, color=plt.cm.RdYlGn(per["top1"].to_numpy()))
ax.set(xlim=(-0.5, len(per) - 0.5), ylim=(0, 1.05), ylabel="test top-1", xticks=[],
       xlabel=f"{len(per)} classes, worst to best; worst: " + ", ".join(per["name"].head(6)),
       title=f"Per-class test accuracy ({int(per['n'].sum())} pictures)")
plt.tight_layout(); plt.show()
""")
    md(r"""
The pictures the model gets most wrong are worth a look (they are often mislabelled). Like the
grid in section 1, this figure is left out of the committed notebook.
""")
    code(r"""
display(Image(filename=str(REPORT / "top_losses.png"), width=800))
""", dataset_pictures=True)
    md(r"""
## 7. Predict

`Classifier.load` gives the object behind `pokemon-classifier predict`, the app and the API: it
applies the checkpoint's preprocessing, temperature and unknown threshold. Top row: the top-5
answers for four test pictures (the green bar is the true class; the pictures themselves are not
shown, see above). Bottom row: two pictures generated here, a yellow disc and a colour gradient,
that are no Pokémon at all. The dotted line is the unknown threshold: an answer whose top bar
ends left of it is reported as `unknown`. A model trained only on Pokémon has no notion of "none
of these", so the threshold is its only defence; how often it works is measured on real
non-Pokémon pictures by `openset.py` (see the README).
""")
    code(r"""
from pokemon_classifier.openset import degenerate_image
from pokemon_classifier.predict import Classifier
from pokemon_classifier.synthetic import draw_shape

clf = Classifier.load(FINAL)
shown = sub[sub["split"] == "test"].sample(4, random_state=0)
answers = clf.predict_batch([DATA / "images" / n for n in shown["img_name"]])
made = [draw_shape("circle", (240, 210, 30), 224, np.random.default_rng(1), clutter=False),
        degenerate_image("gradient", np.random.default_rng(3), 224)]


def top5(ax, r, truth=None):
    names = [t["name"] for t in r["topk"]][::-1]
    probs = [t["probability"] for t in r["topk"]][::-1]
    colours = ["tab:green" if t["dex_id"] == truth else "tab:grey" for t in r["topk"]][::-1]
    ax.barh(names, probs, color=colours)
    ax.axvline(clf.threshold, color="k", ls=":", lw=1)
    ax.set_xlim(0, 1); ax.tick_params(labelsize=7)
    ax.set_title(f"answer: {r['name']} ({r['probability']:.2f})", fontsize=8)


fig, axes = plt.subplots(2, 4, figsize=(13, 5))
for ax, r, dex in zip(axes[0], answers, shown["pokemon_id"]):
    top5(ax, r, dex)
    ax.set_xlabel(f"a test picture of {pokedex.display_name(dex)}", fontsize=8)
for k, img in enumerate(made):
    axes[1, 2 * k].imshow(img); axes[1, 2 * k].axis("off"); axes[1, 2 * k].set_title("generated picture", fontsize=8)
    top5(axes[1, 2 * k + 1], clf.predict(img))
plt.tight_layout(); plt.show()
print(f"unknown threshold {clf.threshold:.3f}, temperature {clf.temperature:.3f}")
""")
    md(r"""
## What next

* `FULL = True` (or `POKEMON_NOTEBOOK_FULL=1`) runs the shipped recipe end to end.
* `pokemon-classifier --help` lists every step as a command; the README gives the commands that
  built the shipped `best.pt`, and `MODEL_CARD.md` its measured figures.
""")
    code(r"""
metrics = json.loads((REPORT / "metrics.json").read_text())
summary = {"mode": "full" if FULL else "quick", "data": str(DATA), "synthetic": SYNTHETIC, "chance": CHANCE,
           "val_top1": [float(h.loc[h["val_loss"].idxmin(), "val_acc"]) for h in hist],
           "test_top1": metrics["top1"], "test_top5": metrics["top5"], "test_n": metrics["n"],
           "minutes": round((time.perf_counter() - T0) / 60, 2)}
(WORK / "summary.json").write_text(json.dumps(summary, indent=1))
print(f"test top-1 {summary['test_top1']:.3f} and top-5 {summary['test_top5']:.3f} on {summary['test_n']} pictures "
      f"(chance {CHANCE:.4f}); the whole notebook took {summary['minutes']:.1f} min")
""")

    nb = nbf.v4.new_notebook()
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating changes no line that did not change
    nb["cells"] = cells
    nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb["metadata"]["language_info"] = {"name": "python"}
    return nb


def strip_dataset_pictures(nb: nbf.NotebookNode) -> nbf.NotebookNode:
    """Drop the image outputs of cells tagged `dataset-pictures` (in place), leaving a note."""
    for cell in nb.cells:
        if cell.cell_type != "code" or TAG not in cell.metadata.get("tags", []):
            continue
        kept = [o for o in cell.get("outputs", []) if o.output_type not in ("display_data", "execute_result")
                or not any(k.startswith("image/") for k in o.get("data", {}))]
        if len(kept) < len(cell.get("outputs", [])):
            kept.append(nbf.v4.new_output("stream", name="stdout", text=NOTE))
        cell.outputs = kept
    return nb


def execute(nb: nbf.NotebookNode, cwd: Path = ROOT) -> nbf.NotebookNode:
    import nbclient

    client = nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3", record_timing=False,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    nb = build()
    if "--execute" in argv:
        strip_dataset_pictures(execute(nb))
    nbf.validate(nb)
    nbf.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}" + (" (executed)" if "--execute" in argv else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
