"""Fitting the open-set state stored in a checkpoint (calibrate --negatives, tools/openset_cv.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pokemon_classifier.openset.degenerate import degenerate_set
from pokemon_classifier.openset.negatives import file_key, read_negatives
from pokemon_classifier.openset.scoring import PARTS, OpenSetHead, WithFeatures
from pokemon_classifier.openset.stats import bound_met, threshold_for

# How much each z-scored part counts, and the head's regularisation: chosen by 2-fold CV inside the
# tuning negatives (tools/openset_cv.py; docs/unknown.md): leaning on the outlier-exposure head
# rejected more photos and Gen-3 art at the same acceptance than the plain sum (1, 1, 1; C 0.01).
WEIGHTS = {"knn": 1.5, "oe": 2.0, "msp": 1.0}
OE_C = 0.001


@dataclass(frozen=True)
class FitOptions:
    """How `fit` scores and sets the threshold: the parts and their weights (WEIGHTS unless given), the
    kNN bank's PCA size, the `oe` head's C and whether it sees the texture statistics (`style`), and
    the threshold rule (`accept` of new Gen-1 pictures with `confidence`; None: the plain quantile)."""
    parts: tuple = PARTS
    pca_dim: int = 256
    C: float = OE_C
    accept: float = 0.95
    weights: dict | None = None
    style: bool = True
    confidence: float | None = 0.9


def fit(train_feats, neg_feats, val_logits, val_feats, temperature: float, *, dim: int,
        opts: FitOptions = FitOptions(), val_flipped: tuple | None = None, style_feats=None, style_kinds=()) -> dict:
    """The open-set state for a checkpoint: every part fitted on training features (+ tuning
    negatives for `oe`), z-scored on the validation images, weighted (WEIGHTS unless given), and
    the threshold from `threshold_for` (at least `accept` of new Gen-1 pictures accepted, with
    `confidence`; None: simply accept `accept` of the validation images).

    Features are WithFeatures' columns: the first `dim` (WithFeatures.dim) are the penultimate ones, the
    kNN bank's; the `oe` head also sees the texture statistics after them unless style=False.

    With `val_flipped` (the validation images' (logits, features) mirrored left-right) the score
    becomes the mean over an image and its mirror image (`flip` in the state; Scored runs both in one
    batch): the parts are fitted as without, the threshold is set on the mean.

    With `style_feats` (features of training pictures rendered in other drawing styles, styles.py,
    kinds `style_kinds`) the `oe` head also sees them as positives: without them it learns "drawn
    like an icon = not Gen-1" from the Gen-3 icons among the negatives (issue 25). The kNN bank, the
    z-scoring and the threshold stay on the plain pictures, so the scoring graph is unchanged."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    parts, pca_dim, C, accept = opts.parts, opts.pca_dim, opts.C, opts.accept
    weights, style, confidence = opts.weights, opts.style, opts.confidence
    tf = np.asarray(train_feats, dtype=np.float64)
    dim = int(dim)
    oe_cols = tf.shape[1] if style else dim
    state: dict = {"version": 2, "parts": [p for p in PARTS if p in parts], "temperature": float(temperature),
                   "threshold": 0.0, "accept": float(accept), "n_train": int(len(tf)), "n_negatives": int(len(neg_feats)),
                   "confidence": confidence, "C": float(C), "features": {"penultimate": dim, "oe": int(oe_cols)},
                   "flip": val_flipped is not None, "style_positives": list(style_kinds),
                   "n_style_positives": 0 if style_feats is None else int(len(style_feats))}
    if "knn" in parts:
        pca = PCA(int(min(pca_dim, dim, len(tf) - 1)), random_state=0).fit(tf[:, :dim])
        state.update(pca_mean=pca.mean_.astype(np.float32), pca_components=pca.components_.astype(np.float32),
                     bank=np.zeros((0, 0), np.float32))
        head = OpenSetHead(dict(state, parts=[]))
        with torch.no_grad():
            state["bank"] = head.project(torch.from_numpy(tf[:, :dim].astype(np.float32))).numpy().astype(np.float16)
    if "oe" in parts:
        nf = np.asarray(neg_feats, dtype=np.float64)[:, :oe_cols]
        pos = tf[:, :oe_cols]
        if style_feats is not None and len(style_feats):
            pos = np.concatenate([pos, np.asarray(style_feats, dtype=np.float64)[:, :oe_cols]])
        mu, sd = tf[:, :oe_cols].mean(0), tf[:, :oe_cols].std(0) + 1e-6
        X = (np.concatenate([pos, nf]) - mu) / sd
        y = np.r_[np.ones(len(pos)), np.zeros(len(nf))]
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


def to_checkpoint(state: dict) -> dict:
    """Arrays as tensors (the bank as float16): loads with torch.load(weights_only=True)."""
    out = {}
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float16 if k == "bank" else np.float32))
        out[k] = v
    return out


@torch.inference_mode()
def extract(model, meta: dict, items, batch_size: int = 64, progress: bool = False, desc: str = "features",
            flip: bool = False):
    """(logits (N,C), features (N,D), errors {row: message}) for images (paths, PIL images, bytes),
    with the checkpoint's evaluation preprocessing (mirrored left-right with flip=True); unreadable rows are NaN."""
    from pokemon_classifier.data import readable_batches

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


def fit_from_files(model, meta: dict, train_paths, val_paths, negatives_dir, temperature: float,
                   accept: float = 0.95, progress: bool = False, confidence: float | None = 0.9,
                   flip: bool = False, style_positives=()) -> tuple[dict, list[str]]:
    """calibrate --negatives: (state, lines for the user) from the features of the training and
    validation images, of the tuning half of the negatives and of generated degenerate pictures
    (seed 1; evaluate reports on seed 2); with `style_positives` (STYLE_KINDS) also of every training
    picture rendered in one of those styles, in turn (styles.round_robin, seed 0)."""
    table = read_negatives(negatives_dir)
    tune = table[table["half"] == "tune"]
    degenerate, _ = degenerate_set(10, seed=1)
    _, tf, te = extract(model, meta, train_paths, progress=progress, desc="train features")
    vl, vf, ve = extract(model, meta, val_paths, progress=progress, desc="val features")
    _, nf, ne = extract(model, meta, list(tune["path"]) + degenerate, progress=progress, desc="negative features")
    ok = lambda a, errs: a[[i for i in range(len(a)) if i not in errs]]  # noqa: E731
    sf = None
    if style_positives:
        sf = style_features(model, meta, train_paths, style_positives)[1]
    flipped = None
    if flip:
        fl, ff, _ = extract(model, meta, val_paths, progress=progress, desc="val features, mirrored", flip=True)
        flipped = ok(fl, ve), ok(ff, ve)
    state = fit(ok(tf, te), ok(nf, ne), ok(vl, ve), ok(vf, ve), temperature, dim=WithFeatures(model).dim,
                opts=FitOptions(accept=accept, confidence=confidence), val_flipped=flipped, style_feats=sf,
                style_kinds=style_positives)
    state["tuned_on"] = sorted(file_key(p) for p in tune["path"])
    state["kinds"] = {str(k): int(v) for k, v in tune["kind"].value_counts().items()}
    n_val = len(vf) - len(ve)
    goal = (f"so that >= {accept:.0%} of new Gen-1 pictures pass with {confidence:.0%} confidence" if confidence
            else f"(asked: {accept:.0%})")
    notes = [f"open-set score fitted on {state['n_train']} training images and {state['n_negatives']} negatives "
             f"({len(tune)} from {negatives_dir}, {len(degenerate)} generated); threshold {state['threshold']:.3f} "
             f"accepts {state['val_accepted']:.1%} of the {n_val} validation images, {goal}"]
    if style_positives:
        notes.append(f"the outlier-exposure head also saw {state['n_style_positives']} training pictures rendered as "
                     f"{', '.join(style_positives)} as Gen-1 pictures")
    if not bound_met(n_val, accept, confidence):
        notes.append(f"warning: {n_val} validation images are too few for that guarantee; the threshold accepts all of "
                     "them")
    return state, notes


def style_features(model, meta: dict, paths, kinds, seed: int = 0, chunk: int = 256):
    """(logits, features, kinds, rows) of `paths` each rendered in one of `kinds` in turn
    (styles.round_robin); rendered `chunk` at a time so that only that many pictures are in memory.
    Unreadable paths are left out (they are counted where the plain pictures are read): `rows` are
    the indices into `paths` of what was rendered, `kinds` each one's style."""
    from pokemon_classifier.errors import ImageError
    from pokemon_classifier.images import load_image
    from pokemon_classifier.styles import render, round_robin

    jobs = round_robin([str(p) for p in paths], list(kinds), seed)
    logits, feats, done = [], [], []
    for start in range(0, len(jobs), chunk):
        items = []
        for i, (path, kind, s) in enumerate(jobs[start: start + chunk], start):
            try:
                items.append(render(load_image(path), kind, s))
            except ImageError:
                continue
            done.append(i)
        if items:
            lo, fe, _ = extract(model, meta, items, desc="style renditions")
            logits.append(lo), feats.append(fe)
    if not logits:
        from pokemon_classifier.errors import UserError

        raise UserError(f"no readable picture among {len(jobs)} training pictures to render")
    return np.concatenate(logits), np.concatenate(feats), np.array([jobs[i][1] for i in done]), np.array(done, int)
