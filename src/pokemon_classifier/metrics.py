"""Classification metrics from probabilities: top-k, macro-F1, NLL, ECE, per-class, confusions.

All take `probs` (N,C) float array and `y` (N,) int class indices; no torch needed.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score


def topk_accuracy(probs: np.ndarray, y: np.ndarray, k: int) -> float:
    if len(y) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    topk = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float((topk == y[:, None]).any(1).mean())


def macro_f1(probs: np.ndarray, y: np.ndarray) -> float:
    """Macro F1 over the classes present in y (absent classes would score 0 by construction)."""
    if len(y) == 0:
        return float("nan")
    return float(f1_score(y, probs.argmax(1), labels=np.unique(y), average="macro", zero_division=0))


def nll(probs: np.ndarray, y: np.ndarray, eps: float = 1e-12) -> float:
    if len(y) == 0:
        return float("nan")
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], eps, 1.0)).mean())


def reliability(probs: np.ndarray, y: np.ndarray, n_bins: int = 15):
    """(bin edges, confidence per bin, accuracy per bin, count per bin) over equal-width bins of max prob."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, n_bins) / count
        acc = np.bincount(idx, correct, n_bins) / count
    return edges, mean_conf, acc, count


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error: sum over bins of |acc - conf| weighted by the bin's share."""
    if len(y) == 0:
        return float("nan")
    _, conf, acc, count = reliability(probs, y, n_bins)
    m = count > 0
    return float(np.sum(np.abs(acc[m] - conf[m]) * count[m]) / count.sum())


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def top_confusions(cm: np.ndarray, n: int = 10) -> list[tuple[int, int, int]]:
    """(true, predicted, count) of the largest off-diagonal cells."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None)[:n]
    return [(int(i // cm.shape[1]), int(i % cm.shape[1]), int(off.flat[i])) for i in flat if off.flat[i] > 0]


def summary(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> dict:
    return {"n": int(len(y)), "top1": topk_accuracy(probs, y, 1), "top5": topk_accuracy(probs, y, 5),
            "macro_f1": macro_f1(probs, y), "nll": nll(probs, y), "ece": ece(probs, y, n_bins)}
