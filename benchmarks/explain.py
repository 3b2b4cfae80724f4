"""How well the Grad-CAM explanation points at the Pokemon: pointing game and deletion curve.

    python benchmarks/explain.py --data data/pokemon --splits runs/splits_final.csv \\
        --negatives ../shared/data/negatives --n 100 --seed 0

Composites: one test-split picture pasted at a random place and scale (35-70% of the side) onto a
448x448 crop of a negatives photo the open-set score was not tuned on (benchmarks/_composites.py).
Pointing game: on the composites the whole-picture answer names correctly, the share whose explanation
peak (predict --explain's "peak", in the composite's pixels) lies inside the pasted box.
Deletion: the model's input cut into 16x16-px cells, masked (set to the normalisation mean) most salient
first vs in a random order, 10% of the cells per step; the mean top-class probability at each step and
its area under the curve (lower = the heat map found what the answer rests on).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _composites as C  # noqa: E402
from _machine import machine  # noqa: E402

from pokemon_classifier.explain import Explainer  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402

CELL = 16
STEPS = 10


def deletion(clf, x, heat, c, rng) -> tuple[np.ndarray, np.ndarray]:
    """Top-class probability as cells are masked, most salient first and in a random order."""
    s = x.shape[-1] // CELL
    cell_heat = torch.from_numpy(heat[: s * CELL, : s * CELL]).reshape(s, CELL, s, CELL).mean((1, 3)).flatten()
    orders = [np.argsort(-cell_heat.numpy()), rng.permutation(s * s)]
    out = []
    for order in orders:
        batch = []
        for k in range(STEPS + 1):
            m = torch.ones(s * s)
            m[torch.from_numpy(order[: round(k / STEPS * s * s)].copy())] = 0
            m = m.reshape(s, s).repeat_interleave(CELL, 0).repeat_interleave(CELL, 1)
            batch.append(x[0] * m)
        out.append(clf.forward(torch.stack(batch))[0][:, c])
    return out[0], out[1]


def drawn_voltorb():
    """A generated picture for the docs' example (no shared picture may be committed): a Voltorb drawn
    with a few shapes, off-centre on a colour gradient."""
    from PIL import Image, ImageDraw

    w, h = 480, 360
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([120 + 60 * xx / w, 160 + 40 * yy / h, 90 + 30 * (1 - xx / w)], -1)
    img = Image.fromarray(a.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    cx, cy, r, ink = 320, 200, 95, (20, 20, 20)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, 255), outline=ink, width=4)
    d.pieslice((cx - r, cy - r, cx + r, cy + r), 180, 360, fill=(220, 30, 40), outline=ink, width=4)
    d.line((cx - r, cy, cx + r, cy), fill=ink, width=4)
    for ex in (-40, 40):
        tilt = -10 if ex < 0 else 10
        d.polygon([(cx + ex - 22, cy - 45), (cx + ex + 22, cy - 45 + tilt), (cx + ex + 18, cy - 18),
                   (cx + ex - 18, cy - 18)], fill=(255, 255, 255), outline=ink)
        d.ellipse((cx + ex - 7, cy - 38, cx + ex + 7, cy - 24), fill=ink)
    return img


def write_example(path, weights=None) -> None:
    """The docs' figure: the generated picture's explanation overlay with predict --multi's boxes."""
    from PIL import ImageDraw

    from pokemon_classifier.explain import overlay
    from pokemon_classifier.fileio import atomic_open
    from pokemon_classifier.multi import Detector

    img = drawn_voltorb()
    ex = Explainer.load(weights)
    e = ex.explain(img)
    out = overlay(e["image"], e["heat"], ex.pre, e["peak"])
    d = ImageDraw.Draw(out)
    for det in Detector.load(weights, Classifier.load(weights)).detect(img):
        d.rectangle(det["box"], outline=(255, 255, 255), width=3)
        d.text((det["box"][0] + 6, det["box"][1] + 4), f"{det['name']} {det['probability']:.2f}", fill=(255, 255, 255))
    with atomic_open(path, "wb") as f:
        out.save(f, format="PNG")
    print(f"wrote {path}: peak {e['peak']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_arguments(ap)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--every", action="store_true", help="measure every composite, named correctly or not (smoke tests)")
    ap.add_argument("--example", metavar="PNG", help="only write the docs' example figure (a generated picture) to PNG")
    a = ap.parse_args(argv)
    if a.example:
        write_example(a.example, a.weights)
        return 0
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    clf = Classifier.load(a.weights)
    ex = Explainer.load(a.weights)
    pictures = C.test_pictures(a.data, a.splits)
    photos = C.background_photos(a.negatives, clf)
    rng = np.random.default_rng(a.seed)
    named = inside = 0
    sal, rnd, secs = [], [], []
    for _ in range(a.n):
        img, box, dex = C.single(rng, pictures, photos)
        r = clf.predict(img, 1)
        if r["topk"][0]["dex_id"] != dex and not a.every:
            continue
        named += 1
        t = time.perf_counter()
        e = ex.explain(img)
        secs.append(time.perf_counter() - t)
        x0, y0, x1, y1 = box
        inside += x0 <= e["peak"][0] < x1 and y0 <= e["peak"][1] < y1
        s, q = deletion(clf, ex.transform(img)[None], e["heat"], e["class_index"], rng)
        sal.append(s)
        rnd.append(q)
    print(f"# {machine()}; {a.threads} threads; seed {a.seed}")
    if not sal:
        print(f"composites: {a.n}; none named correctly: no pointing game")
        return 1
    sal, rnd = np.mean(sal, 0), np.mean(rnd, 0)
    print(f"composites: {a.n}; named correctly by the whole-picture answer: {named} ({named / a.n:.1%})")
    print(f"pointing game: peak inside the pasted box in {inside}/{named} = {inside / max(named, 1):.1%}")
    print("deletion, mean top-class probability after masking 0%, 10%, ... 100% of the cells:")
    print("  most salient first: " + " ".join(f"{v:.3f}" for v in sal) + f"   AUC {np.trapezoid(sal, dx=1 / STEPS):.3f}")
    print("  random order:       " + " ".join(f"{v:.3f}" for v in rnd) + f"   AUC {np.trapezoid(rnd, dx=1 / STEPS):.3f}")
    print(f"explanation time: median {np.median(secs):.3f} s per picture")
    return 0


if __name__ == "__main__":
    sys.exit(main())
