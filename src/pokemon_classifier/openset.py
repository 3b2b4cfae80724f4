"""Open-set recognition: say "unknown" for pictures that are not Gen-1 Pokemon.

    pokemon-classifier calibrate --weights best.pt --data data/ --negatives negatives/   # fit, store in best.pt
    pokemon-classifier evaluate --weights best.pt --data data/ --split test --negatives negatives/

Max-softmax with one threshold cannot separate a blank page ("Ditto 81%") from a real Ditto, so
the score here lives in feature space, from the same forward pass as the prediction: the
Mahalanobis distance of the penultimate features to the nearest class mean (one shared
covariance, in a PCA subspace so that the checkpoint stays small), combined with a linear
"is this a Gen-1 Pokemon?" head fitted on training features against tuning negatives and
generated degenerate pictures (outlier exposure at the head). Higher score = more likely a
Gen-1 Pokemon; below the stored threshold the answer is unknown.

Negatives used to fit and tune never overlap those used to report: `split_negatives` halves the
photos by item and the later-generation Pokemon by species (artwork and icon of one species stay
on the same side), and the degenerate pictures are generated with different seeds.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DEGENERATE_KINDS = ("blank", "solid", "noise", "gradient", "text", "test-pattern", "checkerboard", "stripes",
                    "extreme-crop", "blur-noise")


# ---------------------------------------------------------------- generated degenerate inputs

def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def degenerate_image(kind: str, rng: np.random.Generator, size: int = 256) -> Image.Image:
    """One generated picture of `kind` (see DEGENERATE_KINDS): things a user points the app at
    first (a blank page, a shopping list, the webcam's test pattern) that must come back unknown."""
    w = h = size
    if kind == "blank":
        v = int(rng.choice([255, 250, 0, 128, 240]))
        return Image.new("RGB", (w, h), (v, v, v))
    if kind == "solid":
        return Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    if kind == "noise":
        if rng.random() < 0.5:
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            a = np.clip(rng.normal(128, rng.uniform(20, 80), (h, w, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(a)
    if kind == "blur-noise":
        a = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        return Image.fromarray(a).resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))
    if kind == "gradient":
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        if rng.random() < 0.5:
            ang = rng.uniform(0, math.pi)
            t = (xx * math.cos(ang) + yy * math.sin(ang))
        else:
            t = np.hypot(xx - rng.uniform(0.2, 0.8), yy - rng.uniform(0.2, 0.8))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        a = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.uint8)
        return Image.fromarray(a)
    if kind == "text":
        bg = tuple(int(v) for v in rng.integers(225, 256, 3))
        img = Image.new("RGB", (w, h), bg)
        d = ImageDraw.Draw(img)
        words = ["milk", "eggs", "bread", "apples", "coffee", "rice", "butter", "tea", "soap", "cheese", "TODO",
                 "meeting 10:30", "call mum", "pay rent", "Invoice #4471", "total 23.90", "Dear Sir,", "lorem ipsum"]
        y = int(rng.integers(4, 20))
        fsize = int(rng.integers(12, 30))
        while y < h - fsize:
            line = " ".join(rng.choice(words, int(rng.integers(1, 4))))
            d.text((int(rng.integers(4, 30)), y), line, fill=tuple(int(v) for v in rng.integers(0, 90, 3)),
                   font=_font(fsize))
            y += int(fsize * rng.uniform(1.2, 1.8))
        return img
    if kind == "test-pattern":
        img = Image.new("RGB", (w, h))
        d = ImageDraw.Draw(img)
        if rng.random() < 0.5:  # SMPTE-like colour bars
            bars = [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0), (192, 0, 192), (192, 0, 0), (0, 0, 192)]
            bw = w / len(bars)
            for i, c in enumerate(bars):
                d.rectangle([int(i * bw), 0, int((i + 1) * bw), int(h * 0.7)], fill=c)
            for i in range(4):
                v = int(i * 255 / 3)
                d.rectangle([int(i * w / 4), int(h * 0.7), int((i + 1) * w / 4), h], fill=(v, v, v))
        else:  # a webcam test pattern: green field, a moving pie, a frame counter
            img.paste((0, int(rng.integers(100, 200)), 0), (0, 0, w, h))
            start = float(rng.uniform(0, 360))
            d.pieslice([w * 0.25, h * 0.25, w * 0.75, h * 0.75], start, start + 300, fill=(255, 255, 255))
            d.text((8, 8), f"{int(rng.integers(0, 99999))} ms", fill=(255, 255, 255), font=_font(16))
        return img
    if kind == "checkerboard":
        n = int(rng.integers(2, 16))
        c0, c1 = (tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2))
        if rng.random() < 0.5:
            c0, c1 = (0, 0, 0), (255, 255, 255)
        yy, xx = np.mgrid[0:h, 0:w]
        m = ((xx * n // w + yy * n // h) % 2).astype(bool)
        a = np.where(m[..., None], np.array(c0, np.uint8), np.array(c1, np.uint8))
        return Image.fromarray(a.astype(np.uint8))
    if kind == "stripes":
        n = int(rng.integers(3, 30))
        yy, xx = np.mgrid[0:h, 0:w]
        axis = xx if rng.random() < 0.5 else yy
        m = (axis * n // w) % 2
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        return Image.fromarray(np.where(m[..., None] == 1, c0, c1).astype(np.uint8))
    if kind == "extreme-crop":
        # a few pixels of a smooth random picture blown up: what a badly framed webcam shows
        a = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        return Image.fromarray(a).resize((w, h), Image.BILINEAR)
    raise ValueError(f"unknown degenerate kind {kind!r}")


def degenerate_set(n_per_kind: int = 10, seed: int = 0, size: int = 256) -> tuple[list[Image.Image], list[str]]:
    """`n_per_kind` pictures of every kind in DEGENERATE_KINDS; different seeds give disjoint sets."""
    rng = np.random.default_rng(seed)
    images, kinds = [], []
    for kind in DEGENERATE_KINDS:
        for _ in range(n_per_kind):
            images.append(degenerate_image(kind, rng, size))
            kinds.append(kind)
    return images, kinds


# ---------------------------------------------------------------- negatives: tune vs report

def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def negative_item(img_name: str, kind: str) -> str:
    """The unit that must not straddle tune/report: the species for later-generation Pokemon
    (`gen3art252.jpg` and `gen3icon252.jpg` are one species), the file otherwise."""
    digits = "".join(ch for ch in Path(img_name).stem if ch.isdigit())
    if kind.startswith("gen") and digits:
        return f"species:{int(digits)}"
    return f"file:{img_name}"


def split_negatives(table) -> np.ndarray:
    """'tune' or 'report' for every row of a negatives table (columns img_name, kind).

    Items (see negative_item) are ordered by a fixed hash and halved, separately for photos-like
    kinds and for Pokemon species, so the split is balanced and the same on every machine."""
    items = [negative_item(n, k) for n, k in zip(table["img_name"], table["kind"])]
    family = {}
    for it, k in zip(items, table["kind"]):
        family.setdefault("species" if it.startswith("species:") else str(k), set()).add(it)
    tune = set()
    for members in family.values():
        ordered = sorted(members, key=_sha)
        tune.update(ordered[: len(ordered) // 2])
    return np.array(["tune" if it in tune else "report" for it in items])


# ---------------------------------------------------------------- the score

def _log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


class OpenSetScorer:
    """Higher = more like a Gen-1 Pokemon. Parts (each z-scored on validation images, then summed):

    - `maha`: minus the Mahalanobis distance of the features to the nearest class mean, with one
      shared covariance, in a PCA subspace of the training features (Lee et al. 2018);
    - `oe`: the margin of a logistic "Gen-1 Pokemon or not" head on the standardised features,
      trained on training features against tuning negatives (outlier exposure, Hendrycks et al. 2019);
    - `msp`: the top softmax probability after temperature scaling (Hendrycks & Gimpel 2017).
    """

    def __init__(self, state: dict):
        self.state = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items()}
        self.parts = list(self.state["parts"])
        self.threshold = float(self.state["threshold"])

    # -- the parts
    def _maha(self, feats):
        s = self.state
        x = (feats - s["pca_mean"]) @ s["pca_components"].T
        # squared distance to every class mean: |x|_P^2 - 2 x P mu + |mu|_P^2, without an (N, C, d) tensor
        xp = x @ s["precision"]
        mp = s["class_means"] @ s["precision"]
        d = (xp * x).sum(1)[:, None] - 2 * xp @ s["class_means"].T + (mp * s["class_means"]).sum(1)[None]
        return -d.min(1)

    def _oe(self, feats):
        s = self.state
        return ((feats - s["oe_mean"]) / s["oe_scale"]) @ s["oe_weight"] + float(s["oe_bias"])

    def _msp(self, logits):
        return np.exp(_log_softmax(logits, float(self.state["temperature"])).max(1))

    def raw(self, feats: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
        feats = np.asarray(feats, dtype=np.float64)
        out = {}
        for p in self.parts:
            out[p] = self._msp(logits) if p == "msp" else getattr(self, f"_{p}")(feats)
        return out

    def score(self, feats: np.ndarray, logits: np.ndarray) -> np.ndarray:
        raw = self.raw(feats, logits)
        norm = self.state["norm"]
        return sum((raw[p] - norm[p][0]) / norm[p][1] for p in self.parts).astype(np.float64)

    def state_dict(self) -> dict:
        """Plain tensors and numbers: loads with torch.load(weights_only=True)."""
        import torch

        out = {}
        for k, v in self.state.items():
            out[k] = torch.from_numpy(np.asarray(v, dtype=np.float32)) if isinstance(v, np.ndarray) else v
        return out

    # -- fitting
    @classmethod
    def fit(cls, train_feats, train_y, neg_feats, val_feats, val_logits, temperature: float,
            parts=("maha", "oe", "msp"), pca_dim: int = 128, C: float = 0.01, accept: float = 0.95) -> "OpenSetScorer":
        """Fit every part on training features (+ tuning negatives for `oe`), z-score each on the
        validation features, and set the threshold that accepts `accept` of the validation images."""
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression

        tf = np.asarray(train_feats, dtype=np.float64)
        ty = np.asarray(train_y)
        state: dict = {"parts": list(parts), "temperature": float(temperature), "threshold": 0.0, "norm": {}}
        if "maha" in parts:
            dim = int(min(pca_dim, tf.shape[1], len(tf) - 1))
            pca = PCA(dim, random_state=0).fit(tf)
            x = pca.transform(tf)
            classes = np.unique(ty)
            means = np.stack([x[ty == c].mean(0) for c in classes])
            centred = x - means[np.searchsorted(classes, ty)]
            cov = np.cov(centred.T)
            cov += 1e-3 * np.trace(cov) / dim * np.eye(dim)  # shrinkage: thin classes, near-singular directions
            state.update(pca_mean=pca.mean_, pca_components=pca.components_, class_means=means,
                         precision=np.linalg.inv(cov))
        if "oe" in parts:
            nf = np.asarray(neg_feats, dtype=np.float64)
            mu, sd = tf.mean(0), tf.std(0) + 1e-6
            X = (np.concatenate([tf, nf]) - mu) / sd
            y = np.r_[np.ones(len(tf)), np.zeros(len(nf))]
            head = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(X, y)
            state.update(oe_mean=mu, oe_scale=sd, oe_weight=head.coef_[0], oe_bias=float(head.intercept_[0]))
        scorer = cls(state)
        raw = scorer.raw(val_feats, val_logits)
        state["norm"] = {p: (float(raw[p].mean()), float(raw[p].std() + 1e-12)) for p in parts}
        scorer = cls(state)
        state["threshold"] = float(np.quantile(scorer.score(val_feats, val_logits), 1 - accept))
        return cls(state)
