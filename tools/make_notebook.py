"""python tools/make_notebook.py [--execute]  ->  train.ipynb

Without --execute the notebook is written unexecuted (CI executes it with nbclient). With
--execute it is run here from the repository root and committed with its outputs, except the
figures that show pictures of the shared data set (cells tagged `dataset-pictures`), which must not
go into the repository: their images are replaced by a note.

The notebook is generated so that its code stays reviewable as plain Python here.
"""

import sys

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s.strip()))  # noqa: E731


def code(src: str, dataset_pictures: bool = False) -> None:
    cell = nbf.v4.new_code_cell(src.strip())
    if dataset_pictures:
        cell.metadata["tags"] = ["dataset-pictures"]
    cells.append(cell)

md("""
# Pokémon classifier: from images to an honest test score

This notebook walks the whole workflow with the `pokemon_classifier` package (it defines nothing
itself): explore the data, build a **group-aware split** and measure what a random split would
leak, train, evaluate with plots, and predict.

It uses the real images in `../shared/data/pokemon` when they are present and otherwise a small
synthetic set it generates, so it always runs top to bottom (CI runs it in under 3 minutes).
By default it trains a **short** run; set `FULL = True` for the shipped recipe.
""")
code("""
FULL = False  # True: one run of the shipped recipe, configs/shipped.yaml (Lite0, 192 px, 10 epochs; ~13 min on 2 CPU cores)

import os
from pathlib import Path

%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image, display

from pokemon_classifier import annotations, dedup, pokedex, splits
from pokemon_classifier.cli import main as cli
from pokemon_classifier.models import default_weights
from pokemon_classifier.synthetic import make_dataset

ROOT = Path.cwd()  # the repository (configs/, best.pt); run the notebook from there
WORK = Path("nb_work")
WORK.mkdir(exist_ok=True)
SHARED = Path("../shared/data/pokemon")
REAL = (SHARED / "annotations.csv").is_file()
DATA = SHARED if REAL else make_dataset(WORK / "synthetic", per_class=16)
print("data:", DATA, "(real images)" if REAL else "(synthetic shapes)")
""")
md("## 1. Explore the data\nImages per class (the original project's overview), image sizes, and a batch.")
code("""
df = annotations.read_annotations(DATA)
counts = annotations.class_counts(df)
present = counts[counts > 0]
print(f"{len(df)} images, {len(present)} classes; median {int(present.median())} per class")
print("fewest:", ", ".join(f"{pokedex.display_name(i)} {n}" for i, n in present.head(5).items()))
annotations.plot_class_counts(counts if REAL else present, WORK / "class_counts.png", 15)
display(Image(filename=str(WORK / "class_counts.png"), width=900))
""")
code("""
from pokemon_classifier.images import image_size

sample = df.sample(min(400, len(df)), random_state=0)
sizes = np.array([image_size(DATA / "images" / n) for n in sample["img_name"]])
fig, ax = plt.subplots(figsize=(5, 3))
ax.hist(sizes.max(1), bins=30)
ax.set_xlabel("longer side (px)"); ax.set_ylabel("images"); ax.set_title("Image sizes (sample)")
plt.show()
""")
code("""
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
md("""
## 2. A split that does not leak
Near-duplicate pictures (the same artwork re-encoded, resized or re-framed) are grouped by
perceptual hash; each group goes wholly into one split. The leak report counts validation/test
images that have a near-duplicate in train — the effect that inflated the original 99.93%.
""")
code("""
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
md("## 3. Train\nA short run by default; `FULL = True` runs the shipped recipe.")
code("""
run = WORK / ("full" if FULL else "short")
args = ["train", "--data", DATA, "--splits", WORK / "splits.csv", "--out", run, "--no-progress"]
if FULL:
    args += ["--config", ROOT / "configs" / "shipped.yaml"]
else:
    args += ["--arch", "mobilenet_v3_small", "--img-size", "96", "--epochs", "2", "--max-batches", "8"]
assert cli([str(a) for a in args]) == 0
print(pd.read_csv(run / "metrics.csv")[["epoch", "train_loss", "val_loss", "val_acc", "img_per_s"]])
display(Image(filename=str(run / "curves.png"), width=700))
""")
md("""
## 4. Evaluate honestly
The short run above is only a demonstration, so the evaluation uses the model shipped with the
repository (`best.pt`) when it is there and the data is the real set; the test split here is the
same group-aware split (seed 0) that the model card reports.
""")
code("""
shipped = default_weights()
weights = shipped if (shipped and REAL and not FULL) else run / "best.pt"
report = WORK / "report"
assert cli(["evaluate", "--weights", str(weights), "--data", str(DATA), "--splits", str(WORK / "splits.csv"),
            "--split", "test", "--out", str(report), "--no-progress"]) == 0
""")
code("""
display(Image(filename=str(report / "reliability.png"), width=360))
print("confusion matrix:", report / "confusion.png", "| full report:", report / "report.md")
""")
code("""
display(Image(filename=str(report / "top_losses.png"), width=800))  # the test images it got most wrong
""", dataset_pictures=True)
md("## 5. Predict")
code("""
from pokemon_classifier.predict import Classifier

clf = Classifier.load(weights)
test_names = group_split[group_split["split"] == "test"]["img_name"].sample(6, random_state=0)
fig, axes = plt.subplots(1, 6, figsize=(12, 2.6))
for ax, name in zip(axes, test_names):
    r = clf.predict(DATA / "images" / name)
    ax.imshow(plt.imread(DATA / "images" / name)); ax.axis("off")
    truth = pokedex.display_name(pokedex.id_from_filename(name))
    ax.set_title(f"{r['name']} {r['probability']:.2f}\\n(true: {truth})", fontsize=8)
plt.show()
""", dataset_pictures=True)

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
if "--execute" in sys.argv:
    import nbclient

    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
    note = nbf.v4.new_output("stream", name="stdout", text="[figure of dataset pictures not stored in the repository; "
                                                          "run the notebook to see it]\n")
    for cell in nb.cells:
        if "dataset-pictures" in cell.metadata.get("tags", []):
            kept = [o for o in cell.outputs if o.output_type not in ("display_data", "execute_result")
                    or "image/png" not in o.get("data", {})]
            cell.outputs = kept + ([note] if len(kept) < len(cell.outputs) else [])
nbf.write(nb, "train.ipynb")
print("wrote train.ipynb" + (" (executed)" if "--execute" in sys.argv else ""))
