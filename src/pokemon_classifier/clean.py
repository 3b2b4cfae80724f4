"""Find broken files, duplicates, wrong labels and outliers; review them in a page; apply safely.

    pokemon-classifier clean data/                          # -> data/clean/report.html + candidates.csv
    pokemon-classifier clean data/ --apply decisions.csv    # relabel (rename) / remove (quarantine)
    pokemon-classifier clean data/ --undo                   # undo the last apply
    pokemon-classifier clean data/ --undo --all             # back to the original, byte for byte

Label issues use confident learning (Northcutt et al., the method behind cleanlab, implemented here
because cleanlab is AGPL): out-of-fold probabilities from K-fold logistic regression on cached
ImageNet features; an image is suspect when p(given label) is below that class's average
self-confidence and another class is more likely; ranked by margin. Nothing is ever deleted:
removals go to DATA/quarantine/, and every apply gets its own journal (DATA/clean/journal/<id>.csv
with annotation snapshots), so `--undo` goes back one apply and `--undo --all` restores the dataset
byte for byte, even after crashes.

Three modules, one job each: this one finds the candidates (and is the command), clean_review
writes the page, clean_apply applies and undoes decisions.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from pokemon_classifier import pokedex
from pokemon_classifier.annotations import ANNOTATIONS, check_images, read_annotations
from pokemon_classifier.clean_apply import apply, journals, recover, undo  # noqa: F401  (journals: clean.journals)
from pokemon_classifier.clean_review import write_report
from pokemon_classifier.errors import UserError
from pokemon_classifier.fileio import atomic_write_csv, remove_stale_temps, sha256_file

CANDIDATE_COLUMNS = ["finding", "rank", "img_name", "pokemon_id", "given", "suggested_id", "suggested",
                     "probability", "score", "reason", "group"]


# ------------------------------------------------------------------ confident learning

def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0, C: float = 0.5) -> np.ndarray:
    """(N, C) out-of-fold class probabilities of a linear classifier; columns = sorted unique labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    classes = np.unique(labels)
    counts = pd.Series(labels).value_counts()
    k = int(max(2, min(folds, counts.min()))) if counts.min() >= 2 else folds
    probs = np.zeros((len(labels), len(classes)), dtype=np.float64)
    # StratifiedKFold needs every class in every fold's train part; tiny classes simply stay in train
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    strat = np.where(counts.reindex(labels).to_numpy() >= k, labels, -1)
    for tr, te in splitter.split(features, strat):
        scaler = StandardScaler().fit(features[tr])
        clf = LogisticRegression(C=C, max_iter=300)
        clf.fit(scaler.transform(features[tr]), labels[tr])
        p = clf.predict_proba(scaler.transform(features[te]))
        cols = np.searchsorted(classes, clf.classes_)
        probs[np.ix_(te, cols)] = p
    return probs


def label_issues(probs: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> pd.DataFrame:
    """Confident learning: suspect when p(given) < t[given] and some other class j has p_j >= t[j] and p_j > p(given).

    t[c] = mean p(c | x) over the images labelled c (the class's average self-confidence).
    """
    idx = np.searchsorted(classes, labels)
    t = np.array([probs[idx == c, c].mean() if (idx == c).any() else 1.0 for c in range(len(classes))])
    p_given = probs[np.arange(len(labels)), idx]
    other = probs.copy()
    other[np.arange(len(labels)), idx] = -1
    confident_other = np.where(other >= t[None, :], other, -1)
    j = confident_other.argmax(1)
    pj = confident_other[np.arange(len(labels)), j]
    suspect = (p_given < t[idx]) & (pj > p_given)
    out = pd.DataFrame({"row": np.flatnonzero(suspect), "suggested": classes[j[suspect]],
                        "p_suggested": pj[suspect], "p_given": p_given[suspect]})
    out["margin"] = out["p_suggested"] - out["p_given"]
    return out.sort_values("margin", ascending=False).reset_index(drop=True)


def outliers(features: np.ndarray, labels: np.ndarray, n: int = 50) -> pd.DataFrame:
    """Images far from every class: cosine distance to the nearest class centroid, largest first."""
    f = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-8)
    classes = np.unique(labels)
    cent = np.stack([f[labels == c].mean(0) for c in classes])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True) + 1e-8
    dist = 1 - (f @ cent.T).max(1)
    order = np.argsort(-dist)[:n]
    return pd.DataFrame({"row": order, "distance": dist[order]})


# ------------------------------------------------------------------ finding everything

def candidate(finding, name, dex, reason, score=0.0, suggested=None, prob=None, group="") -> dict:
    """One row of candidates.csv (CANDIDATE_COLUMNS but the rank)."""
    return {"finding": finding, "img_name": name, "pokemon_id": dex,
            "given": pokedex.display_name(dex) if dex else "",
            "suggested_id": suggested or "", "suggested": pokedex.display_name(suggested) if suggested else "",
            "probability": "" if prob is None else round(float(prob), 4), "score": round(float(score), 4),
            "reason": reason, "group": group}


def broken_files(data_dir: Path, df: pd.DataFrame, min_size: int, progress: bool) -> tuple[list[dict], set[str]]:
    """Step 1: (unreadable and too-small rows, the unreadable names), over every file in images/,
    annotated or not."""
    from pokemon_classifier.images import is_image_file

    img_dir = data_dir / "images"
    files = sorted(p for p in img_dir.rglob("*") if is_image_file(p))
    label_of = dict(zip(df["img_name"], df["pokemon_id"]))
    rows, bad_names = [], set()
    for chk in check_images(files, desc="checking", progress=progress):
        name = Path(chk.path).relative_to(img_dir).as_posix()
        if not chk.ok:
            rows.append(candidate("unreadable", name, label_of.get(name), chk.reason))
            bad_names.add(name)
        elif min(chk.width, chk.height) < min_size:
            rows.append(candidate("too_small", name, label_of.get(name), f"{chk.width}x{chk.height} px (< {min_size})"))
    return rows, bad_names


def duplicates(data_dir: Path, df: pd.DataFrame, threshold, progress: bool) -> tuple[list[dict], int, int]:
    """Step 2: (exact and near-duplicate rows, cross-class groups first; groups; cross-class groups)."""
    from pokemon_classifier import dedup

    thr = dedup.DEFAULT_THRESHOLD if threshold is None else threshold
    groups = dedup.find_groups(data_dir, df, threshold=thr, progress=progress)
    shas = {n: sha256_file(data_dir / "images" / n) for n in groups.loc[groups["group_size"] > 1, "img_name"]}
    dup = groups[groups["group_size"] > 1].copy()
    dup["sha"] = dup["img_name"].map(shas)
    rows, n_cross = [], 0
    for cross in (True, False):
        for gid, g in dup.groupby("group"):
            is_cross = g["pokemon_id"].nunique() > 1
            if is_cross != cross:
                continue
            n_cross += is_cross
            exact = g["sha"].duplicated(keep=False)
            members = ", ".join(g["img_name"])
            for r in g.itertuples():
                kind = "cross_class_duplicate" if cross else ("exact_duplicate" if exact[r.Index] else "near_duplicate")
                rows.append(candidate(kind, r.img_name, r.pokemon_id, ("identical bytes" if exact[r.Index] else
                                                                        "near-identical") + f" to {members}",
                                      group=f"g{gid}"))
    return rows, dup["group"].nunique(), n_cross


def feature_findings(data_dir: Path, df: pd.DataFrame, weights, folds: int, top_outliers: int,
                     progress: bool) -> tuple[list[dict], list[dict]]:
    """Steps 3 and 4, from cached features: (label-issue rows, outlier rows)."""
    from pokemon_classifier.features import extract_features

    feats = extract_features(data_dir, df, weights=weights, progress=progress)
    labels = df["pokemon_id"].to_numpy()
    probs = out_of_fold_probs(feats, labels, folds)
    classes = np.unique(labels)
    issues = [candidate("label_issue", df["img_name"][r.row], int(labels[r.row]),
                        f"p(given)={r.p_given:.2f} < class average; {pokedex.display_name(int(r.suggested))} more likely",
                        score=r.margin, suggested=int(r.suggested), prob=r.p_suggested)
              for r in label_issues(probs, labels, classes).itertuples()]
    far = []
    for r in outliers(feats, labels, top_outliers).itertuples():
        i = int(r.row)
        best = classes[int(probs[i].argmax())]
        far.append(candidate("outlier", df["img_name"][i], int(labels[i]), f"far from every class (cosine distance "
                             f"{r.distance:.2f})", score=r.distance, suggested=int(best), prob=probs[i].max()))
    return issues, far


def find_candidates(data_dir, min_size: int = 32, folds: int = 5, weights=None, threshold=None,
                    top_outliers: int = 50, progress: bool = True, on_step=None) -> pd.DataFrame:
    """Every finding, ranked within its kind.

    `on_step` (the clean command passes print) is told each step's count as it ends: each takes a while.
    """
    echo = on_step or (lambda line: None)
    data_dir = Path(data_dir)
    df = read_annotations(data_dir)
    # 1. unreadable / too small
    rows, bad_names = broken_files(data_dir, df, min_size, progress)
    df = df[~df["img_name"].isin(bad_names)].reset_index(drop=True)
    echo(f"{len(bad_names)} unreadable files")
    # 2. exact and near-duplicates
    dups, n_groups, n_cross = duplicates(data_dir, df, threshold, progress)
    echo(f"{n_groups} duplicate groups ({n_cross} across classes)")
    # 3. label issues and 4. outliers
    issues, far = feature_findings(data_dir, df, weights, folds, top_outliers, progress)
    echo(f"{len(issues)} label-issue candidates (confident learning, {folds}-fold)")
    cand = pd.DataFrame(rows + dups + issues + far)
    cand["rank"] = cand.groupby("finding").cumcount() + 1
    order = {"unreadable": 0, "too_small": 1, "cross_class_duplicate": 2, "label_issue": 3, "exact_duplicate": 4,
             "near_duplicate": 5, "outlier": 6}
    cand = cand.sort_values(["finding", "rank"], key=lambda s: s.map(order) if s.name == "finding" else s, kind="stable")
    return cand[CANDIDATE_COLUMNS].reset_index(drop=True)


# ------------------------------------------------------------------ CLI

def add_arguments(p) -> None:
    from pokemon_classifier.fileio import out_dir
    from pokemon_classifier.runtime import nonnegative_int, positive_int

    p.add_argument("data", type=Path, help="data folder (annotations.csv + images/)")
    p.add_argument("--apply", type=Path, metavar="DECISIONS", help="apply a decisions.csv exported from the report")
    p.add_argument("--undo", nargs="?", type=Path, const=True, metavar="JOURNAL",
                   help="undo the last --apply (or the one whose DATA/clean/journal/*.csv is given)")
    p.add_argument("--all", action="store_true", help="with --undo: undo every apply, back to the original")
    p.add_argument("--out", type=out_dir, help="report folder (default: DATA/clean)")
    p.add_argument("--folds", type=positive_int, default=5, help="K for out-of-fold probabilities")
    p.add_argument("--weights", help="use this checkpoint's features instead of ImageNet efficientnet_lite0")
    p.add_argument("--min-size", type=nonnegative_int, default=32, help="flag images smaller than this (px)")
    p.add_argument("--threshold", type=int, default=None, help="near-duplicate Hamming threshold")
    p.add_argument("--outliers", type=nonnegative_int, default=50, help="how many outliers to list")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _say(*lines: str) -> None:
    for line in lines:
        if line:
            print(line)


def main(args) -> int:
    # temp files of a killed clean (fileio's ".<target>.<random>.tmp"), only those from before this run
    started = time.time()
    remove_stale_temps(args.data, [ANNOTATIONS], started)
    remove_stale_temps(args.out or args.data / "clean", ["candidates.csv", "report.html", ".pending.json"], started)
    if args.apply and args.undo:
        raise UserError("--apply and --undo are exclusive")
    if args.apply:
        _say(recover(args.data))  # before apply, which may refuse the decisions file after recovering
        _say(*apply(args.data, args.apply).lines)
        return 0
    if args.all and args.undo is not True:
        raise UserError("--all goes with --undo and no journal: pokemon-classifier clean DATA --undo --all")
    if args.undo:
        _say(recover(args.data))
        _say(*undo(args.data, None if args.undo is True else args.undo, all_=args.all).lines)
        return 0
    _say(recover(args.data))
    read_annotations(args.data, purpose="clean")
    if args.weights:  # a bad checkpoint is refused before minutes of checking images, not after
        from pokemon_classifier.models import model_from_checkpoint, read_checkpoint

        model_from_checkpoint(read_checkpoint(args.weights), args.weights)
    cand = find_candidates(args.data, args.min_size, args.folds, args.weights, args.threshold, args.outliers,
                           args.progress, on_step=print)
    out = args.out or args.data / "clean"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out / "candidates.csv", cand)
    page = write_report(args.data, cand, out)
    counts = cand["finding"].value_counts()
    print("findings: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"wrote {page} and {out / 'candidates.csv'}")
    return 0
