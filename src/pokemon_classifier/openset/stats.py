"""The threshold with its tolerance bound, and the rates evaluate reports."""

from __future__ import annotations

import numpy as np


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
