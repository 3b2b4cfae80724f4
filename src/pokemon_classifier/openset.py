"""Open-set recognition: say "unknown" for pictures that are not Gen-1 Pokemon.

    pokemon-classifier calibrate --weights best.pt --data data/ --negatives negatives/   # fit, store in best.pt
    pokemon-classifier evaluate --weights best.pt --data data/ --split test --negatives negatives/

Max-softmax with one threshold cannot separate a blank page ("Ditto 81%") from a real Ditto, so
the score here also lives in feature space, from the same forward pass as the prediction: the
similarity of the penultimate features to the nearest training image (a PCA bank small enough for
the checkpoint), a linear "is this a Gen-1 Pokemon?" head fitted on training features plus
texture statistics of a middle stage against tuning negatives and generated degenerate pictures
(outlier exposure at the head), and the calibrated top probability. Higher score = more likely a
Gen-1 Pokemon; below the stored threshold (a tolerance bound on the validation scores) the
answer is unknown. With `calibrate --flip` the score is the mean over the picture and its
mirror image (twice the compute; README "Unknown" has what it changed).

Negatives used to fit and tune never overlap those used to report: `split_negatives` halves the
photos by item and the later-generation Pokemon by species (artwork and icon of one species stay
on the same side), and the degenerate pictures are generated with different seeds.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
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


def split_negatives(table, rng: np.random.Generator | None = None) -> np.ndarray:
    """'tune' or 'report' for every row of a negatives table (columns img_name, kind).

    Items (see negative_item) are ordered by a fixed hash and halved, separately for photos-like
    kinds and for Pokemon species, so the split is balanced and the same on every machine. With
    `rng` the order is random instead (tools/openset_cv.py --repeats: other splits of the same kind)."""
    items = [negative_item(n, k) for n, k in zip(table["img_name"], table["kind"])]
    family = {}
    for it, k in zip(items, table["kind"]):
        family.setdefault("species" if it.startswith("species:") else str(k), set()).add(it)
    tune = set()
    for members in family.values():
        ordered = sorted(members, key=_sha) if rng is None else list(rng.permutation(sorted(members)))
        tune.update(ordered[: len(ordered) // 2])
    return np.array(["tune" if it in tune else "report" for it in items])


# ---------------------------------------------------------------- the score

PARTS = ("knn", "oe", "msp")
# How much each z-scored part counts, and the head's regularisation: chosen by 2-fold CV inside the
# tuning negatives (tools/openset_cv.py; README "Unknown"): leaning on the outlier-exposure head
# rejected more photos and Gen-3 art at the same acceptance than the plain sum (1, 1, 1; C 0.01).
WEIGHTS = {"knn": 1.5, "oe": 2.0, "msp": 1.0}
OE_C = 0.001


class OpenSetHead(torch.nn.Module):
    """score(logits, features): higher = more like a Gen-1 Pokemon. Three parts, each z-scored on
    validation images, then summed with the weights stored beside them (WEIGHTS; 1 in older files):

    - `knn`: cosine similarity of the features to the nearest training image, in a PCA subspace of
      the training features (deep nearest neighbours, Sun et al. 2022; the bank is stored as float16);
    - `oe`: the margin of a logistic "Gen-1 Pokemon or not" head on the standardised features
      (penultimate + texture statistics, see WithFeatures),
      trained on training features against tuning negatives (outlier exposure at the head,
      Hendrycks et al. 2019);
    - `msp`: the top softmax probability after temperature scaling (Hendrycks & Gimpel 2017).

    Chosen by 2-fold cross-validation on the tuning negatives among max-softmax, energy,
    Mahalanobis, kNN and outlier-exposure scores and their sums (README, "Unknown"). A torch
    module, so that predict, serve and the ONNX graph compute the very same number.
    """

    def __init__(self, state: dict):
        super().__init__()
        self.parts = [p for p in PARTS if p in state["parts"]]
        self.threshold = float(state["threshold"])
        self.temperature = float(state["temperature"])
        t = lambda k: torch.as_tensor(np.asarray(state[k]), dtype=torch.float32)  # noqa: E731
        for k in ("pca_mean", "pca_components", "bank", "oe_mean", "oe_scale", "oe_weight"):
            self.register_buffer(k, t(k) if k in state else torch.zeros(0), persistent=False)
        self.oe_bias = float(state.get("oe_bias", 0.0))
        norm = state.get("norm") or {p: (0.0, 1.0) for p in self.parts}
        self.register_buffer("norm", torch.tensor([norm[p] for p in self.parts], dtype=torch.float32).reshape(-1, 2),
                             persistent=False)
        weights = state.get("weights") or {}
        self.register_buffer("weights", torch.tensor([float(weights.get(p, 1.0)) for p in self.parts]), persistent=False)
        self.flip = bool(state.get("flip", False))  # the score is the mean over the image and its mirror image

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        x = (feats - self.pca_mean) @ self.pca_components.T
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def raw(self, logits: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """(N, parts) raw part scores, in PARTS order."""
        cols = []
        for p in self.parts:
            if p == "knn":  # the penultimate features only (the first columns)
                cols.append((self.project(feats[:, : self.pca_mean.numel()]) @ self.bank.T).max(1).values)
            elif p == "oe":  # + the texture statistics, when it was fitted with them
                f = feats[:, : self.oe_mean.numel()]
                cols.append(((f - self.oe_mean) / self.oe_scale) @ self.oe_weight + self.oe_bias)
            else:
                cols.append(torch.softmax(logits / self.temperature, 1).max(1).values)
        return torch.stack(cols, 1)

    def forward(self, logits: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        z = (self.raw(logits.float(), feats.float()) - self.norm[:, 0]) / self.norm[:, 1]
        return (z * self.weights).sum(1)


def fit(train_feats, neg_feats, val_logits, val_feats, temperature: float, parts=PARTS, pca_dim: int = 256,
        C: float = OE_C, accept: float = 0.95, weights: dict | None = None, *, dim: int,
        style: bool = True, confidence: float | None = 0.9, val_flipped: tuple | None = None) -> dict:
    """The open-set state for a checkpoint: every part fitted on training features (+ tuning
    negatives for `oe`), z-scored on the validation images, weighted (WEIGHTS unless given), and
    the threshold from `threshold_for` (at least `accept` of new Gen-1 pictures accepted, with
    `confidence`; None: simply accept `accept` of the validation images).

    Features are WithFeatures' columns: the first `dim` (WithFeatures.dim) are the penultimate ones, the
    kNN bank's; the `oe` head also sees the texture statistics after them unless style=False.

    With `val_flipped` (the validation images' (logits, features) mirrored left-right) the score
    becomes the mean over an image and its mirror image (`flip` in the state; Scored runs both in one
    batch): the parts are fitted as without, the threshold is set on the mean."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    tf = np.asarray(train_feats, dtype=np.float64)
    dim = int(dim)
    oe_cols = tf.shape[1] if style else dim
    state: dict = {"version": 2, "parts": [p for p in PARTS if p in parts], "temperature": float(temperature),
                   "threshold": 0.0, "accept": float(accept), "n_train": int(len(tf)), "n_negatives": int(len(neg_feats)),
                   "confidence": confidence, "C": float(C), "features": {"penultimate": dim, "oe": int(oe_cols)},
                   "flip": val_flipped is not None}
    if "knn" in parts:
        pca = PCA(int(min(pca_dim, dim, len(tf) - 1)), random_state=0).fit(tf[:, :dim])
        state.update(pca_mean=pca.mean_.astype(np.float32), pca_components=pca.components_.astype(np.float32),
                     bank=np.zeros((0, 0), np.float32))
        head = OpenSetHead(dict(state, parts=[]))
        with torch.no_grad():
            state["bank"] = head.project(torch.from_numpy(tf[:, :dim].astype(np.float32))).numpy().astype(np.float16)
    if "oe" in parts:
        nf = np.asarray(neg_feats, dtype=np.float64)[:, :oe_cols]
        mu, sd = tf[:, :oe_cols].mean(0), tf[:, :oe_cols].std(0) + 1e-6
        X = (np.concatenate([tf[:, :oe_cols], nf]) - mu) / sd
        y = np.r_[np.ones(len(tf)), np.zeros(len(nf))]
        lr = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(X, y)
        state.update(oe_mean=mu.astype(np.float32), oe_scale=sd.astype(np.float32),
                     oe_weight=lr.coef_[0].astype(np.float32), oe_bias=float(lr.intercept_[0]))
    with torch.no_grad():
        raw = OpenSetHead(state).raw(torch.as_tensor(val_logits, dtype=torch.float32),
                                     torch.as_tensor(val_feats, dtype=torch.float32)).numpy()
        state["norm"] = {p: (float(raw[:, i].mean()), float(raw[:, i].std() + 1e-12)) for i, p in enumerate(state["parts"])}
        state["weights"] = {p: float((WEIGHTS if weights is None else weights).get(p, 1.0)) for p in state["parts"]}
        head = OpenSetHead(state)
        score = head(torch.as_tensor(val_logits), torch.as_tensor(val_feats)).numpy()
        if val_flipped is not None:
            score = (score + head(*(torch.as_tensor(a) for a in val_flipped)).numpy()) / 2
    state["threshold"], state["val_accepted"] = threshold_for(score, accept, confidence)
    return to_checkpoint(state)


def threshold_for(val_scores, accept: float, confidence: float | None = 0.9) -> tuple[float, float]:
    """(threshold, share of the validation images it accepts): the highest validation score such
    that, with probability `confidence`, at least `accept` of new in-distribution pictures score
    at or above it.

    Why not the plain (1 - accept) quantile: with a few hundred validation images that quantile
    misses by a point or more either way (327 images at 95%: a coin flip whether the true rate is
    >= 95%). A distribution-free tolerance bound fixes it: with the threshold at the r-th smallest
    of n exchangeable scores, the share of new pictures accepted follows Beta(n + 1 - r, r)
    (Wilks 1941; split conformal prediction), so r is the largest rank whose Beta tail clears
    `confidence`. With too few images for the bound (bound_met), the lowest score is used; a
    falsy confidence gives the plain quantile."""
    from scipy.stats import beta

    s = np.sort(np.asarray(val_scores, dtype=np.float64))
    n = len(s)
    if not confidence:
        t = float(np.quantile(s, 1 - accept))
    else:
        ranks = np.arange(1, n + 1)
        ok = beta.sf(accept, n + 1 - ranks, ranks) >= confidence
        t = float(s[ranks[ok].max() - 1]) if ok.any() else float(s[0])
    return t, float((s >= t).mean())


def bound_met(n: int, accept: float, confidence: float | None) -> bool:
    """Whether n validation images are enough for threshold_for's bound (at r = 1)."""
    from scipy.stats import beta

    return not confidence or bool(beta.sf(accept, n, 1) >= confidence)


def to_checkpoint(state: dict) -> dict:
    """Arrays as tensors (the bank as float16): loads with torch.load(weights_only=True)."""
    out = {}
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float16 if k == "bank" else np.float32))
        out[k] = v
    return out


# ---------------------------------------------------------------- negatives on disk, metrics, plot

def read_negatives(folder) -> "pd.DataFrame":
    """Images of FOLDER (recursive; FOLDER/images/ when it exists) with their `kind` from an optional
    FOLDER/manifest.csv (img_name,kind), 'negative' otherwise, and their tune/report `half`."""
    import pandas as pd

    from pokemon_classifier.errors import UserError
    from pokemon_classifier.images import is_image_file

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: negatives folder not found")
    root = folder / "images" if (folder / "images").is_dir() else folder
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise UserError(f"{folder}: no images in the negatives folder")
    table = pd.DataFrame({"img_name": [p.relative_to(root).as_posix() for p in files], "path": files})
    table["kind"] = "negative"
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        try:
            m = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise UserError(f"{manifest}: not a readable CSV ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        if {"img_name", "kind"} <= set(m.columns):
            kinds = m.drop_duplicates("img_name").set_index("img_name")["kind"]
            table["kind"] = table["img_name"].map(kinds).fillna("negative").replace("", "negative")
    table["half"] = split_negatives(table)
    return table


def rates(id_scores, neg_scores, neg_kinds, threshold: float) -> dict:
    """AUROC and FPR at 95% TPR (all negatives), and at `threshold`: the share of in-distribution
    images accepted and the share of negatives rejected per kind."""
    from sklearn.metrics import roc_auc_score

    id_scores, neg_scores, neg_kinds = np.asarray(id_scores), np.asarray(neg_scores), np.asarray(neg_kinds)
    y = np.r_[np.ones(len(id_scores)), np.zeros(len(neg_scores))]
    out = {"n_in": int(len(id_scores)), "n_out": int(len(neg_scores)), "threshold": float(threshold),
           "auroc": float(roc_auc_score(y, np.r_[id_scores, neg_scores])) if len(neg_scores) and len(id_scores) else None,
           "fpr_at_95_tpr": float((neg_scores >= np.quantile(id_scores, 0.05)).mean()) if len(neg_scores) else None,
           "in_accepted": float((id_scores >= threshold).mean()) if len(id_scores) else None,
           "rejected": {}}
    for k in sorted(set(neg_kinds.tolist())):
        m = neg_kinds == k
        out["rejected"][str(k)] = {"n": int(m.sum()), "rate": float((neg_scores[m] < threshold).mean())}
    return out


def plot_scores(id_scores, neg_scores, neg_kinds, threshold: float, path, title: str = "") -> None:
    """Histograms of the open-set score: in-distribution images against each kind of negative."""
    from pokemon_classifier.fileio import atomic_savefig, subplots

    fig, ax = subplots(figsize=(8, 4.5))
    allv = np.r_[id_scores, neg_scores]
    bins = np.linspace(float(np.min(allv)), float(np.max(allv)), 50)
    for k, colour in zip(sorted(set(np.asarray(neg_kinds).tolist())), ["tab:blue", "tab:orange", "tab:purple", "tab:red",
                                                                        "tab:brown", "tab:pink", "tab:gray", "tab:olive"]):
        v = np.asarray(neg_scores)[np.asarray(neg_kinds) == k]
        ax.hist(v, bins=bins, alpha=0.4, density=True, color=colour, label=f"not Gen-1: {k} ({len(v)})")
    # the in-distribution images as a bold outline on top, so no negative kind's colour hides them
    ax.hist(id_scores, bins=bins, density=True, histtype="step", lw=2.2, color="black",
            label=f"Gen-1 Pokémon ({len(id_scores)})")
    ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold (below = unknown)")
    ax.set_xlabel("open-set score (higher = more like a Gen-1 Pokémon)"), ax.set_ylabel("density")
    ax.set_title(title or "Open-set score: in-distribution vs negatives")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)


class WithFeatures(torch.nn.Module):
    """model(x) -> (logits, features): the prediction and the open-set score come from the same
    forward pass (and the same ONNX graph). The features are the penultimate ones (`dim` columns,
    what the classifier and the kNN bank see), then the mean and the standard deviation of every
    channel of the last stride-16 feature map: texture statistics that tell a photo or a Gen-3
    artwork from a Gen-1 picture better than the penultimate features alone (README, "Unknown")."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        m = getattr(model, "model", model)  # the original format's 1000-way wrapper
        self._timm = hasattr(m, "forward_head")
        self.tap, self.dim = self._probe(m)

    def _stages(self, m):
        return list(m.blocks) if self._timm else list(m.features)

    def _trunk(self, m, x, tap: int):
        """(last feature map, the output of stage `tap`, each stage's output width)."""
        if self._timm:  # timm EfficientNet.forward_features, with the tap between its blocks
            x = m.bn1(m.conv_stem(x))
        tapped, widths = x, []
        for i, stage in enumerate(self._stages(m)):
            x = stage(x)
            widths.append(x.shape[-1])
            if i == tap:
                tapped = x
        if self._timm:
            x = m.bn2(m.conv_head(x))
        return x, tapped, widths

    @torch.no_grad()
    def _probe(self, m) -> tuple[int, int]:
        """The index of the last stage whose output is 1/16 of the input, and the penultimate width."""
        modes = {mod: mod.training for mod in m.modules()}
        m.eval()  # a probe must not move batch-norm statistics
        try:
            w = next(m.parameters())
            x, _, widths = self._trunk(m, torch.zeros(1, 3, 64, 64, device=w.device, dtype=w.dtype), tap=-1)
            dim = self._head(m, x)[1].shape[1]
        finally:  # each module as it was (frozen stages stay in eval mode)
            for mod, training in modes.items():
                mod.training = training
        taps = [i for i, width in enumerate(widths) if width == 4]
        if not taps:
            raise ValueError(f"{type(m).__name__}: no stage at 1/16 of the input resolution")
        return taps[-1], int(dim)

    def _head(self, m, x):
        if self._timm:
            f = m.forward_head(x, pre_logits=True)
            return m.get_classifier()(f), f
        f = m.classifier[:-1](torch.flatten(m.avgpool(x), 1))  # torchvision MobileNetV3
        return m.classifier[-1](f), f

    def forward(self, x):
        m = getattr(self.model, "model", self.model)
        x, s, _ = self._trunk(m, x, self.tap)
        logits, f = self._head(m, x)
        if m is not self.model:
            logits = logits[:, : self.model.n]
        mu = s.mean((2, 3))
        sd = (s - mu[..., None, None]).square().mean((2, 3)).sqrt()
        return logits, torch.cat([f, mu, sd], 1)


class Scored(torch.nn.Module):
    """x -> (logits, open-set score): what Classifier runs and what `export` writes to ONNX."""

    def __init__(self, model: torch.nn.Module, head: OpenSetHead):
        super().__init__()
        self.net, self.head = WithFeatures(model), head

    def forward(self, x):
        if not self.head.flip:
            logits, feats = self.net(x)
            return logits, self.head(logits, feats)
        n = x.shape[0]  # the image and its mirror image in one batch; the prediction is the image's own
        logits, feats = self.net(torch.cat([x, x.flip(3)]))
        score = self.head(logits, feats)
        return logits[:n], (score[:n] + score[n:]) / 2


# ---------------------------------------------------------------- fitting from files (calibrate)

@torch.inference_mode()
def extract(model, meta: dict, items, batch_size: int = 64, progress: bool = False, desc: str = "features",
            flip: bool = False):
    """(logits (N,C), features (N,D), errors {row: message}) for images (paths, PIL images, bytes),
    with the checkpoint's evaluation preprocessing (mirrored left-right with flip=True); unreadable rows are NaN."""
    from pokemon_classifier.predict import readable_batches

    net = WithFeatures(model).eval()
    items = list(items)
    logits = feats = None
    errors: dict[int, str] = {}
    device = next(model.parameters()).device
    for idx, x in readable_batches(items, meta["preprocessing"], errors, batch_size, progress=progress, desc=desc):
        x = x.flip(3) if flip else x
        lo, fe = net(x.to(device).contiguous(memory_format=torch.channels_last))
        if logits is None:
            logits = np.full((len(items), lo.shape[1]), np.nan, np.float32)
            feats = np.full((len(items), fe.shape[1]), np.nan, np.float32)
        logits[idx], feats[idx] = lo.float().cpu().numpy(), fe.float().cpu().numpy()
    if logits is None:
        from pokemon_classifier.errors import UserError

        raise UserError(f"no readable image among {len(items)} ({next(iter(errors.values()), '')})")
    return logits, feats, errors


def file_key(path) -> str:
    """A short content hash: how a checkpoint remembers which negatives it was tuned on."""
    from pokemon_classifier.fileio import sha256_file

    return sha256_file(path)[:16]


def fit_from_files(model, meta: dict, train_paths, val_paths, negatives_dir, temperature: float,
                   accept: float = 0.95, progress: bool = False, echo=print, confidence: float | None = 0.9,
                   flip: bool = False) -> dict:
    """calibrate --negatives: features of the training and validation images, of the tuning half of
    the negatives and of generated degenerate pictures (seed 1; evaluate reports on seed 2)."""
    table = read_negatives(negatives_dir)
    tune = table[table["half"] == "tune"]
    degenerate, _ = degenerate_set(10, seed=1)
    _, tf, te = extract(model, meta, train_paths, progress=progress, desc="train features")
    vl, vf, ve = extract(model, meta, val_paths, progress=progress, desc="val features")
    _, nf, ne = extract(model, meta, list(tune["path"]) + degenerate, progress=progress, desc="negative features")
    ok = lambda a, errs: a[[i for i in range(len(a)) if i not in errs]]  # noqa: E731
    flipped = None
    if flip:
        fl, ff, _ = extract(model, meta, val_paths, progress=progress, desc="val features, mirrored", flip=True)
        flipped = ok(fl, ve), ok(ff, ve)
    state = fit(ok(tf, te), ok(nf, ne), ok(vl, ve), ok(vf, ve), temperature, accept=accept, dim=WithFeatures(model).dim,
                confidence=confidence, val_flipped=flipped)
    state["tuned_on"] = sorted(file_key(p) for p in tune["path"])
    state["kinds"] = {str(k): int(v) for k, v in tune["kind"].value_counts().items()}
    n_val = len(vf) - len(ve)
    goal = (f"so that >= {accept:.0%} of new Gen-1 pictures pass with {confidence:.0%} confidence" if confidence
            else f"(asked: {accept:.0%})")
    echo(f"open-set score fitted on {state['n_train']} training images and {state['n_negatives']} negatives "
         f"({len(tune)} from {negatives_dir}, {len(degenerate)} generated); threshold {state['threshold']:.3f} "
         f"accepts {state['val_accepted']:.1%} of the {n_val} validation images, {goal}")
    if not bound_met(n_val, accept, confidence):
        echo(f"warning: {n_val} validation images are too few for that guarantee; the threshold accepts all of them")
    return state
