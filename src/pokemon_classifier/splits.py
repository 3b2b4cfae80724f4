"""Stratified train/val/test split where near-duplicate groups never straddle a boundary.

    pokemon-classifier split data/
    pokemon-classifier split data/ --seed 1 --val 0.1 --test 0.2
    pokemon-classifier split data/ --random --out data/splits_random.csv
    pokemon-classifier split data/ --hash-only --out data/splits_v1.csv   # the split v1 best.pt saw
    pokemon-classifier split data/ --leak-report data/splits_v1.csv       # measure an existing split
    pokemon-classifier split data/ --final 0.7 --out runs/splits_final.csv   # the shipped model's split
    pokemon-classifier split data/ --extend runs/splits_final.csv --out runs/splits_extra.csv  # + added pictures

`--final F` makes the same split, then moves val into train except a stratified, group-aware F of it
that stays `val` as the calibration slice: the shipped model trains on train + the rest of val at fixed
epochs, and its temperature and open-set threshold are fitted on images it never saw. Test is unchanged.

Writes splits.csv (img_name, split) and prints a leak report: val/test images with a
near-duplicate in train, under the merged groups and per measure (hash incl. crosswise, embedding);
0 for this split; --random shows the original project's leak.

Group-aware: every near-duplicate group (dedup.py) lands wholly in one split, stratified by class
(a group counts for its majority class). `--random` reproduces the original project's leaky split
so the leak can be measured: the printed report counts val/test images whose group has a member
in train.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pokemon_classifier import pokedex
from pokemon_classifier.errors import UserError
from pokemon_classifier.fileio import atomic_write_csv, read_csv_input, remove_stale_temps

SPLITS = ("train", "val", "test")
UNUSED = "unused"  # `split --extend`: an extra picture with a near-duplicate in val/test, never trained on
SPLITS_CSV = "splits.csv"


def _targets(n: int, val: float, test: float) -> tuple[int, int]:
    """Images of a class to put in val/test; train always keeps at least one."""
    n_test, n_val = int(round(n * test)), int(round(n * val))
    if test > 0 and n >= 3:
        n_test = max(n_test, 1)
    if val > 0 and n >= 3:
        n_val = max(n_val, 1)
    while n_test + n_val > n - 1 and (n_test or n_val):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def group_split(groups: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 0) -> pd.Series:
    """Split labels (index aligned with `groups`) from DataFrame[img_name, group, pokemon_id]."""
    _check_fractions(val, test)
    rng = np.random.default_rng(seed)
    g = groups.reset_index(drop=True)
    sizes = g.groupby("group").size()
    majority = g.groupby("group")["pokemon_id"].agg(lambda s: s.value_counts().idxmax())
    split_of_group: dict[int, str] = {}
    small = []
    for dex in sorted(majority.unique()):
        gids = majority[majority == dex].index.to_numpy()
        gids = gids[rng.permutation(len(gids))]
        n = int(sizes[gids].sum())
        n_val, n_test = _targets(n, val, test)
        if (val > 0 and n_val == 0) or (test > 0 and n_test == 0):
            small.append(f"{pokedex.display_name(int(dex))} ({n})")
        filled = {"test": 0, "val": 0}
        want = {"test": n_test, "val": n_val}
        in_train = 0
        for k, gid in enumerate(gids):
            s = int(sizes[gid])
            last_chance = in_train == 0 and k == len(gids) - 1  # every class keeps a group in train
            for name in ("test", "val"):
                # a group goes to test/val only if it does not overshoot the target by more than half
                if not last_chance and filled[name] < want[name] and filled[name] + s - want[name] <= max(0, s // 2):
                    split_of_group[gid] = name
                    filled[name] += s
                    break
            else:
                split_of_group[gid] = "train"
                in_train += s
    if small:
        warnings.warn("classes too small to fill every split (all kept in train where needed): " + ", ".join(small),
                      stacklevel=2)
    return g["group"].map(split_of_group).rename("split")


def random_split(groups: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 0) -> pd.Series:
    """The original project's split: images shuffled and cut, ignoring duplicates (stratified by class)."""
    _check_fractions(val, test)
    rng = np.random.default_rng(seed)
    g = groups.reset_index(drop=True)
    out = pd.Series("train", index=g.index, name="split")
    for dex, idx in g.groupby("pokemon_id").groups.items():
        idx = np.asarray(idx)[rng.permutation(len(idx))]
        n_val, n_test = _targets(len(idx), val, test)
        out[idx[:n_test]] = "test"
        out[idx[n_test:n_test + n_val]] = "val"
    return out


def _check_fractions(val: float, test: float) -> None:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise UserError(f"--val {val} and --test {test} must be fractions with val + test < 1")


def duplicate_in_train(groups: pd.DataFrame, split: pd.Series, column: str = "group") -> np.ndarray:
    """Per row of `groups`: True when its near-duplicate group (`column`) has a member in train (train rows
    themselves are True; callers look at val/test rows)."""
    g = groups.reset_index(drop=True).assign(split=split.to_numpy())
    train_groups = set(g.loc[g["split"] == "train", column])
    return g[column].isin(train_groups).to_numpy()


MEASURES = {"hash": "hash_group", "embedding": "embed_group"}


def leaks_by_measure(groups: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """Per row: leaked under the merged groups ('any') and under each measure dedup computed."""
    out = {"any": duplicate_in_train(groups, split)}
    for name, col in MEASURES.items():
        if col in groups.columns:
            out[name] = duplicate_in_train(groups, split, col)
    return pd.DataFrame(out)


def leak_report(groups: pd.DataFrame, split: pd.Series) -> dict:
    """Per split: images whose near-duplicate group has a member in train ('leaked': merged groups;
    'by_measure': hash incl. crosswise and embedding separately)."""
    leaks = leaks_by_measure(groups, split)
    s_ = split.to_numpy()
    return {s: {"n": int((s_ == s).sum()), "leaked": int(leaks["any"][s_ == s].sum()),
                "by_measure": {m: int(leaks[m][s_ == s].sum()) for m in leaks.columns if m != "any"}}
            for s in ("val", "test")}


def format_leak(rep: dict) -> str:
    def one(s, v):
        by = ", ".join(f"{m} {k}" for m, k in v.get("by_measure", {}).items())
        return f"{s}: {v['leaked']} of {v['n']} images have a near-duplicate in train" + (f" ({by})" if by else "")

    return "; ".join(one(s, v) for s, v in rep.items())


KINDS = {False: "group-aware", True: "random"}


def check_final(keep: float) -> None:
    if not 0 < keep < 1:
        raise UserError(f"--final {keep} must be a fraction between 0 and 1 (the share of val kept to calibrate)")


def fold_val(groups: pd.DataFrame, split: pd.Series, keep: float, seed: int = 0) -> pd.Series:
    """Move val into train except a stratified, group-aware fraction `keep` of it (the calibration slice,
    still called val); train and test rows are untouched and no group straddles the new boundary."""
    check_final(keep)
    g = groups.reset_index(drop=True)
    out = split.reset_index(drop=True).copy()
    in_val = (out == "val").to_numpy()
    with warnings.catch_warnings():  # a class with one val image simply trains on it
        warnings.simplefilter("ignore")
        sub = group_split(g[in_val], val=0.0, test=keep, seed=seed + 1)  # "test" here = the slice kept as val
    out[in_val] = np.where(sub.to_numpy() == "test", "val", "train")
    return out


def make_splits(groups: pd.DataFrame, val=0.15, test=0.15, seed=0, random=False, final=None) -> pd.DataFrame:
    """img_name, split, kind: the kind ('group-aware' or 'random') travels with the file, so a model
    trained on it can record which split it really saw."""
    fn = random_split if random else group_split
    split = fn(groups, val, test, seed)
    if final is not None:
        split = fold_val(groups, split, final, seed)
    return pd.DataFrame({"img_name": groups["img_name"].to_numpy(), "split": split.to_numpy(), "kind": KINDS[random]})


def read_splits(path, annotations: pd.DataFrame | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: splits file not found (run `pokemon-classifier split`)")
    df = read_csv_input(path, "splits file (img_name,split)", dtype={"img_name": str, "split": str})
    if list(df.columns[:2]) != ["img_name", "split"]:
        raise UserError(f"{path}: header must be img_name,split")
    bad = ~df["split"].isin(SPLITS + (UNUSED,))
    if bad.any():
        raise UserError(f"{path}: unknown split {df['split'][bad].iloc[0]!r} (expected train/val/test/unused)")
    if annotations is not None:
        missing = set(annotations["img_name"]) - set(df["img_name"])
        if missing:
            raise UserError(f"{path}: {len(missing)} annotated images have no split (e.g. {sorted(missing)[0]}); "
                            f"re-run `pokemon-classifier split`")
    return df[["img_name", "split"]]


def split_kind(path: Path) -> str:
    """What a splits.csv is: its `kind` column (written by `split`), else 'unknown'."""
    kinds = pd.read_csv(path, usecols=lambda c: c == "kind", dtype=str)
    if "kind" in kinds.columns and kinds["kind"].nunique() == 1:
        return str(kinds["kind"].iloc[0])
    return "unknown"


def extend_with_train(groups: pd.DataFrame, old: pd.DataFrame) -> pd.Series:
    """Per row of `groups`: its split in `old` (img_name, split), and for a picture `old` does not list
    (an extra training folder added with `annotate --add`) 'train', or 'unused' when its near-duplicate
    group holds a val/test picture, so val and test stay exactly as they were and leak-free."""
    g = groups.reset_index(drop=True)
    split = g["img_name"].map(old.drop_duplicates("img_name").set_index("img_name")["split"])
    new = split.isna().to_numpy()
    held_out = set(g.loc[split.isin(["val", "test"]).to_numpy(), "group"])
    clash = g["group"].isin(held_out).to_numpy()
    return split.where(~new, np.where(clash, UNUSED, "train")).rename("split")


def leaked_names(groups: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """img_name, split, measures: the val/test images with a near-duplicate in train."""
    leaks = leaks_by_measure(groups, split)
    s_ = split.to_numpy()
    rows = leaks["any"].to_numpy() & (s_ != "train")
    measures = [", ".join(m for m in leaks.columns if m != "any" and leaks[m][i]) or "merged group only"
                for i in np.flatnonzero(rows)]
    return pd.DataFrame({"img_name": groups["img_name"].to_numpy()[rows], "split": s_[rows], "measures": measures})


@dataclass
class Grouping:
    """How the near-duplicate groups are found (dedup's options; None: dedup's defaults)."""

    threshold: int | None = None
    embed_threshold: float | None = None
    hash_only: bool = False
    workers: int | None = None

    def find(self, data_dir) -> tuple[pd.DataFrame, str]:
        """(dedup groups of every annotated image, the line that says how they were found)."""
        from pokemon_classifier import dedup

        embed = dedup.DEFAULT_EMBED_THRESHOLD if self.embed_threshold is None else self.embed_threshold
        groups = dedup.find_groups(data_dir, threshold=self.threshold, workers=self.workers, embed_threshold=embed,
                                   hash_only=self.hash_only)
        return groups, f"near-duplicates: {dedup.describe(self.threshold, embed, self.hash_only)}"


def leak_of_file(data_dir, splits_path, grouping: Grouping) -> list[str]:
    """split --leak-report: lines naming the val/test images of `splits_path` with a near-duplicate in
    train. Writes nothing."""
    groups, how = grouping.find(data_dir)
    sp = read_splits(splits_path, groups)
    split = groups[["img_name"]].merge(sp, on="img_name", how="left")["split"]
    lines = [how, f"leak report of {splits_path}: " + format_leak(leak_report(groups, split))]
    lines += [f"  {r.split:4s} {r.img_name} ({r.measures})" for r in leaked_names(groups, split).itertuples()]
    return lines


def extend_file(data_dir, extend, path: Path, grouping: Grouping) -> tuple[pd.DataFrame, list[str]]:
    """split --extend: `extend` as it is plus DATA's pictures it does not list, written to `path`."""
    groups, how = grouping.find(data_dir)
    old = read_splits(extend)
    split = extend_with_train(groups, old)
    splits = pd.DataFrame({"img_name": groups["img_name"].to_numpy(), "split": split.to_numpy(),
                           "kind": split_kind(extend)})
    added = ~groups["img_name"].isin(old["img_name"]).to_numpy()
    unused = splits.loc[splits["split"] == UNUSED, "img_name"].tolist()
    atomic_write_csv(path, splits)
    return splits, [how, f"extended {extend}: {int(added.sum()) - len(unused)} new pictures join train; {len(unused)} "
                         f"left unused (a near-duplicate of a val/test picture)" + (f": {', '.join(unused)}" if unused else ""),
                    "leak report: " + format_leak(leak_report(groups, splits["split"])), f"wrote {path}"]


def split_file(data_dir, path: Path, grouping: Grouping, val=0.15, test=0.15, seed=0, random=False,
               final=None) -> tuple[pd.DataFrame, list[str]]:
    """split: a new group-aware (or, with random=True, the original leaky) split, written to `path`."""
    groups, how = grouping.find(data_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = make_splits(groups, val, test, seed, random, final)
    atomic_write_csv(path, splits)
    counts = splits["split"].value_counts().reindex(SPLITS, fill_value=0)
    kind = f"{KINDS[random]} (leaky, for comparison)" if random else KINDS[random]
    if final is not None:
        kind += f", val folded into train but {final:g} of it kept to calibrate"
    return splits, [how, *(f"warning: {w.message}" for w in caught),
                    f"{kind} split, seed {seed}: " + ", ".join(f"{s} {counts[s]}" for s in SPLITS),
                    "leak report: " + format_leak(leak_report(groups, splits["split"])), f"wrote {path}"]


def add_arguments(p) -> None:
    from pokemon_classifier.fileio import out_file
    from pokemon_classifier.runtime import positive_int
    from pokemon_classifier.dedup import add_grouping_arguments

    p.add_argument("data", help="data folder with annotations.csv and images/")
    p.add_argument("--val", type=float, default=0.15, help="fraction for validation")
    p.add_argument("--test", type=float, default=0.15, help="fraction for test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random", action="store_true", help="the original leaky random split (for comparison)")
    p.add_argument("--final", type=float, default=None, metavar="F",
                   help="train on train + val: move val into train except a group-aware fraction F of it, kept as "
                        "val to calibrate (the shipped model's split; test unchanged)")
    p.add_argument("--extend", type=Path, metavar="SPLITS.csv",
                   help="keep SPLITS.csv as it is and add DATA's pictures it does not list (an extra training folder "
                        "merged with `annotate --add`) to train; one with a near-duplicate in val/test becomes 'unused'")
    add_grouping_arguments(p)
    p.add_argument("--leak-report", type=Path, metavar="SPLITS.csv",
                   help="write nothing: list the val/test images of SPLITS.csv with a near-duplicate in train")
    p.add_argument("--out", type=out_file, help="output CSV (default: DATA/splits.csv)")
    p.add_argument("--workers", type=positive_int, default=None, help="hashing processes (default: all cores, at most 8)")


def main(args) -> int:
    from pokemon_classifier.dedup import check_grouping_arguments

    _check_fractions(args.val, args.test)  # before hashing, which can take minutes
    if args.final is not None:
        check_final(args.final)  # before hashing, too

    check_grouping_arguments(args)
    grouping = Grouping(args.threshold, args.embed_threshold, args.hash_only, args.workers)
    if args.leak_report is not None:
        lines = leak_of_file(args.data, args.leak_report, grouping)
    else:
        path = Path(args.out) if args.out else Path(args.data) / SPLITS_CSV
        remove_stale_temps(path.parent, [path.name], time.time())  # temp files of a killed earlier run
        if args.extend is not None:
            _, lines = extend_file(args.data, args.extend, path, grouping)
        else:
            _, lines = split_file(args.data, path, grouping, args.val, args.test, args.seed, args.random, args.final)
    for line in lines:
        print(line)
    return 0
