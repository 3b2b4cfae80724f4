"""The open-set score's histogram in evaluate's report."""

from __future__ import annotations

import numpy as np


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
