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
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from pokemon_classifier import pokedex
from pokemon_classifier.annotations import (ANNOTATIONS, COLUMNS, MANIFEST, check_images, class_files, read_annotations,
                                            safe_image_path)
from pokemon_classifier.errors import UserError
from pokemon_classifier.fileio import (atomic_open, atomic_write_csv, atomic_write_text, read_csv_input, remove_stale_temps,
                                       sha256_file)

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

def find_candidates(data_dir, min_size: int = 32, folds: int = 5, weights=None, threshold=None,
                    top_outliers: int = 50, progress: bool = True, echo=print) -> pd.DataFrame:
    from pokemon_classifier import dedup
    from pokemon_classifier.features import extract_features
    from pokemon_classifier.images import is_image_file

    data_dir = Path(data_dir)
    df = read_annotations(data_dir)
    rows: list[dict] = []

    def row(finding, name, dex, reason, score=0.0, suggested=None, prob=None, group=""):
        rows.append({"finding": finding, "img_name": name, "pokemon_id": dex,
                     "given": pokedex.display_name(dex) if dex else "",
                     "suggested_id": suggested or "", "suggested": pokedex.display_name(suggested) if suggested else "",
                     "probability": "" if prob is None else round(float(prob), 4), "score": round(float(score), 4),
                     "reason": reason, "group": group})

    # 1. unreadable / too small (every file in images/, annotated or not)
    img_dir = data_dir / "images"
    files = sorted(p for p in img_dir.rglob("*") if is_image_file(p))
    label_of = dict(zip(df["img_name"], df["pokemon_id"]))
    bad_names = set()
    for chk in check_images(files, desc="checking", progress=progress):
        name = Path(chk.path).relative_to(img_dir).as_posix()
        if not chk.ok:
            row("unreadable", name, label_of.get(name), chk.reason)
            bad_names.add(name)
        elif min(chk.width, chk.height) < min_size:
            row("too_small", name, label_of.get(name), f"{chk.width}x{chk.height} px (< {min_size})")
    df = df[~df["img_name"].isin(bad_names)].reset_index(drop=True)
    echo(f"{len(bad_names)} unreadable files")

    # 2. exact and near-duplicates, cross-class groups first
    thr = dedup.DEFAULT_THRESHOLD if threshold is None else threshold
    groups = dedup.find_groups(data_dir, df, threshold=thr, progress=progress)
    shas = {n: sha256_file(data_dir / "images" / n) for n in groups.loc[groups["group_size"] > 1, "img_name"]}
    dup = groups[groups["group_size"] > 1].copy()
    dup["sha"] = dup["img_name"].map(shas)
    n_cross = 0
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
                row(kind, r.img_name, r.pokemon_id, ("identical bytes" if exact[r.Index] else "near-identical")
                    + f" to {members}", group=f"g{gid}")
    echo(f"{dup['group'].nunique()} duplicate groups ({n_cross} across classes)")

    # 3. label issues and 4. outliers from cached features
    feats = extract_features(data_dir, df, weights=weights, progress=progress)
    labels = df["pokemon_id"].to_numpy()
    probs = out_of_fold_probs(feats, labels, folds)
    classes = np.unique(labels)
    issues = label_issues(probs, labels, classes)
    for r in issues.itertuples():
        name, dex = df["img_name"][r.row], int(labels[r.row])
        row("label_issue", name, dex, f"p(given)={r.p_given:.2f} < class average; {pokedex.display_name(int(r.suggested))} "
            f"more likely", score=r.margin, suggested=int(r.suggested), prob=r.p_suggested)
    echo(f"{len(issues)} label-issue candidates (confident learning, {folds}-fold)")
    out = outliers(feats, labels, top_outliers)
    for r in out.itertuples():
        i = int(r.row)
        best = classes[int(probs[i].argmax())]
        row("outlier", df["img_name"][i], int(labels[i]), f"far from every class (cosine distance {r.distance:.2f})",
            score=r.distance, suggested=int(best), prob=probs[i].max())
    cand = pd.DataFrame(rows)
    cand["rank"] = cand.groupby("finding").cumcount() + 1
    order = {"unreadable": 0, "too_small": 1, "cross_class_duplicate": 2, "label_issue": 3, "exact_duplicate": 4,
             "near_duplicate": 5, "outlier": 6}
    cand = cand.sort_values(["finding", "rank"], key=lambda s: s.map(order) if s.name == "finding" else s, kind="stable")
    return cand[CANDIDATE_COLUMNS].reset_index(drop=True)


# ------------------------------------------------------------------ the review page

def _thumb(path: Path, size: int = 112) -> str:
    from pokemon_classifier.errors import ImageError
    from pokemon_classifier.images import load_image

    try:
        img = load_image(path)
    except ImageError:
        return ""
    img.thumbnail((size, size))
    b = io.BytesIO()
    img.save(b, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(b.getvalue()).decode()


TITLES = {"unreadable": "Unreadable files", "too_small": "Too small", "cross_class_duplicate":
          "Duplicates across classes (label errors or ambiguous)", "label_issue": "Likely wrong labels",
          "exact_duplicate": "Byte-identical copies", "near_duplicate": "Near-duplicates", "outlier": "Outliers"}


def write_report(data_dir: Path, cand: pd.DataFrame, out_dir: Path, max_per_section: int = 300) -> Path:
    options = "".join(f'<option value="{pokedex.name(i)}">{html.escape(pokedex.display_name(i))}</option>' for i in pokedex.IDS)
    sections = []
    for finding, g in cand.groupby("finding", sort=False):
        cards = []
        for r in g.head(max_per_section).itertuples():
            src = _thumb(data_dir / "images" / r.img_name)
            # nothing changes unless a person chooses it; the suggested label is pre-selected for relabel
            default = "remove" if r.finding == "unreadable" else "keep"
            sugg = pokedex.name(int(r.suggested_id)) if str(r.suggested_id) not in ("", "nan") else ""
            cards.append(
                f'<div class="c" data-img="{html.escape(r.img_name)}" data-default="{default}" data-sugg="{sugg}">'
                + (f'<img src="{src}" alt="">' if src else '<div class="ni">no preview</div>')
                + f'<b>{html.escape(r.img_name)}</b><span>given: {html.escape(str(r.given))}</span>'
                + (f'<span>suggested: {html.escape(str(r.suggested))} ({r.probability})</span>' if sugg else "")
                + f'<small>{html.escape(str(r.reason))}</small>'
                + '<select class="a"><option>keep</option><option>relabel</option><option>remove</option></select>'
                + '<select class="l"><option value=""></option>' + options + "</select></div>")
        more = f"<p>{len(g) - max_per_section} more in candidates.csv</p>" if len(g) > max_per_section else ""
        sections.append(f'<h2>{TITLES.get(finding, finding)} ({len(g)})</h2><div class="g">{"".join(cards)}</div>{more}')
    page = f"""<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Clean review: {html.escape(str(data_dir))}</title><style>
body{{font:14px system-ui,sans-serif;margin:1rem;background:#fafafa}} .g{{display:flex;flex-wrap:wrap;gap:.6rem}}
.c{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4rem;width:190px;display:flex;flex-direction:column;gap:.15rem}}
.c img{{max-width:112px;max-height:112px;align-self:center}} .c small{{color:#666}} .ni{{height:112px;color:#999}}
.c.remove{{background:#fee}} .c.relabel{{background:#eef6ff}} #bar{{position:sticky;top:0;background:#fafafa;padding:.5rem 0}}
button{{font-size:1rem;padding:.4rem .8rem}}</style></head><body>
<h1>Review candidates for {html.escape(str(data_dir))}</h1>
<div id="bar"><button id="export">Export decisions.csv</button> <span id="count"></span>
<p>Choose keep / relabel (pick the right Pokémon) / remove, export, then run
<code>pokemon-classifier clean {html.escape(str(data_dir))} --apply decisions.csv</code>. Removed files go to quarantine/; nothing is deleted.</p></div>
{"".join(sections)}
<script>
const cards=[...document.querySelectorAll('.c')];
for(const c of cards){{const a=c.querySelector('.a'),l=c.querySelector('.l');a.value=c.dataset.default;l.value=c.dataset.sugg;
 const upd=()=>{{c.className='c '+a.value;}};a.onchange=upd;upd();}}
function csv(){{const seen=new Set();let out='img_name,action,new_label\\n';
 for(const c of cards){{const a=c.querySelector('.a').value,l=c.querySelector('.l').value,n=c.dataset.img;
  if(a==='keep'||seen.has(n))continue;seen.add(n);out+=`"${{n.replace(/"/g,'""')}}",${{a}},${{a==='relabel'?l:''}}\\n`;}}return out;}}
document.getElementById('export').onclick=()=>{{const b=new Blob([csv()],{{type:'text/csv'}});const u=URL.createObjectURL(b);
 const e=document.createElement('a');e.href=u;e.download='decisions.csv';e.click();}};
</script></body></html>"""
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path


# ------------------------------------------------------------------ apply / undo

JOURNAL_COLUMNS = ["step", "action", "img_name", "new_img_name", "old_id", "new_id", "from_path", "to_path", "at"]


def _next_free(data_dir: Path, dex: int, ext: str, taken: set) -> str:
    """The next <name><NNN> after those on disk and those already planned in this apply (`taken`)."""
    nums = [n for _, n in class_files(data_dir / "images", dex)]
    nums += [num for found, num in map(pokedex.parse_filename, taken) if found == dex]
    return f"{pokedex.name(dex)}{max(nums, default=0) + 1:03d}{ext}"


def plan(data_dir: Path, decisions: pd.DataFrame, df: pd.DataFrame, source="decisions.csv") -> pd.DataFrame:
    label_of = {k: int(v) for k, v in zip(df["img_name"], df["pokemon_id"])}  # plain ints: no np.int64 in messages
    steps, taken = [], set()
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for i, r in enumerate(decisions.itertuples()):
        name, action = str(r.img_name), str(r.action).strip().lower()
        where = f"{source}: row {i + 2}"
        try:  # the same guard as annotations.csv: a decision may not reach outside images/
            src = safe_image_path(data_dir, name)
        except UserError:
            raise UserError(f"{where}: img_name {name!r} must stay inside images/") from None
        name = src.relative_to(data_dir / "images").as_posix()
        if action == "keep":
            continue
        if action not in ("relabel", "remove"):
            raise UserError(f"{where}: action must be keep, relabel or remove (got {str(r.action)!r})")
        if not src.is_file():
            raise UserError(f"{where}: {src} not found")
        old = label_of.get(name, "")
        if action == "remove":
            dest = data_dir / "quarantine" / name
            if dest.exists():
                raise UserError(f"{where}: {dest} already exists; move it away first")
            steps.append(dict(action="remove", img_name=name, new_img_name="", old_id=old, new_id="",
                              from_path=f"images/{name}", to_path=f"quarantine/{name}", at=at))
        else:
            new_label = str(getattr(r, "new_label", "") or "")
            if not new_label.strip():
                raise UserError(f"{where}: relabel of {name} needs new_label")
            try:
                new = pokedex.to_id(new_label)
            except UserError as e:
                raise UserError(f"{where}: {e}") from None
            new_name = _next_free(data_dir, new, Path(name).suffix, taken)
            taken.add(new_name)
            steps.append(dict(action="relabel", img_name=name, new_img_name=new_name, old_id=old, new_id=new,
                              from_path=f"images/{name}", to_path=f"images/{new_name}", at=at))
    out = pd.DataFrame(steps, columns=[c for c in JOURNAL_COLUMNS if c != "step"])
    out.insert(0, "step", range(1, len(out) + 1))
    return out


def _annotations_after(df: pd.DataFrame, journal: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for r in journal.itertuples():
        if r.action == "remove":
            df = df[df["img_name"] != r.img_name]
        elif r.img_name in set(df["img_name"]):
            df.loc[df["img_name"] == r.img_name, ["img_name", "pokemon_id"]] = [r.new_img_name, int(r.new_id)]
        else:
            df = pd.concat([df, pd.DataFrame([{"img_name": r.new_img_name, "pokemon_id": int(r.new_id)}])])
    return df[COLUMNS].sort_values("img_name", kind="stable")


def _manifest_after(data_dir: Path, journal: pd.DataFrame) -> pd.DataFrame | None:
    """DATA/manifest.csv (where each picture came from, and its `kind`) with relabelled pictures under
    their new names and ids, so provenance and `evaluate --by kind` follow the rename; None without one."""
    path = data_dir / MANIFEST
    if not path.is_file():
        return None
    m = read_csv_input(path, "manifest", dtype=str, keep_default_na=False)
    if "img_name" not in m.columns:
        return None
    moved = journal[journal["action"] == "relabel"].set_index("img_name")
    hit = m["img_name"].isin(moved.index)
    new = moved.loc[m.loc[hit, "img_name"]]
    if "pokemon_id" in m.columns:
        m.loc[hit, "pokemon_id"] = new["new_id"].astype(int).astype(str).to_numpy()
    if "name" in m.columns:
        m.loc[hit, "name"] = new["new_img_name"].str.replace(r"\d+\.[^.]+$", "", regex=True).to_numpy()
    m.loc[hit, "img_name"] = new["new_img_name"].to_numpy()
    return m


def _move_all(data_dir: Path, journal: pd.DataFrame, reverse: bool) -> None:
    """Idempotent: a step already done (source gone, destination present) is skipped, so a crashed run rolls forward."""
    rows = list(journal.itertuples())
    for r in (reversed(rows) if reverse else rows):
        src, dst = (data_dir / r.to_path, data_dir / r.from_path) if reverse else (data_dir / r.from_path, data_dir / r.to_path)
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        elif not dst.exists():
            raise UserError(f"{src}: missing, and {dst} does not exist either; the dataset changed outside clean")


def _pending(data_dir: Path) -> Path:
    return data_dir / "clean" / ".pending.json"


def _journal_dir(data_dir: Path) -> Path:
    return data_dir / "clean" / "journal"


def _undone_marker(journal_path: Path) -> Path:
    return journal_path.with_name(journal_path.stem + ".undone")


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_open(dst, "wb") as f:
        f.write(src.read_bytes())


def read_journal(data_dir: Path, path) -> pd.DataFrame:
    """A changes journal written by --apply, or a one-line error (empty, foreign, escaping the data folder)."""
    path = Path(path)
    journal = read_csv_input(path, "clean journal (DATA/clean/journal/*.csv)", dtype={"new_img_name": str})
    missing = [c for c in JOURNAL_COLUMNS + ["annotations_before"] if c not in journal.columns]
    if missing or journal.empty:
        raise UserError(f"{path}: not a journal written by `clean --apply` "
                        + (f"(missing columns {', '.join(missing)})" if missing else "(no rows)"))
    for col in ("from_path", "to_path"):
        for v in journal[col].astype(str):
            p = PurePosixPath(v)
            if p.is_absolute() or ".." in p.parts or p.parts[:1] not in (("images",), ("quarantine",)):
                raise UserError(f"{path}: {col} {v!r} is outside images/ and quarantine/")
    before = path.parent / str(journal["annotations_before"].iloc[0])
    if PurePosixPath(str(journal["annotations_before"].iloc[0])).name != str(journal["annotations_before"].iloc[0]) \
            or not before.is_file():
        raise UserError(f"{path}: its annotations snapshot {before} is missing")
    return journal


def recover(data_dir: Path, echo=print) -> None:
    """Finish an --apply/--undo that crashed half-way (files moved, annotations not yet written)."""
    marker = _pending(data_dir)
    if not marker.is_file():
        return
    info = json.loads(marker.read_text())
    jpath = data_dir / info["journal"]
    journal = pd.read_csv(jpath, dtype={"new_img_name": str}, keep_default_na=False)
    _move_all(data_dir, journal, info["mode"] == "undo")
    _copy_atomic(data_dir / info["annotations"], data_dir / ANNOTATIONS)
    if info.get("manifest"):
        _copy_atomic(data_dir / info["manifest"], data_dir / MANIFEST)
    if info["mode"] == "undo":
        atomic_write_text(_undone_marker(jpath), datetime.now(timezone.utc).isoformat(timespec="seconds") + "\n")
    marker.unlink()
    echo(f"finished an interrupted {info['mode']} from {info['journal']}")


def journals(data_dir: Path) -> list[Path]:
    """Applied journals not yet undone, oldest first (ids sort by time)."""
    jdir = _journal_dir(data_dir)
    found = sorted(p for p in jdir.glob("*.csv") if not p.name.endswith((".before.csv", ".after.csv")))
    return [p for p in found if not _undone_marker(p).exists()]


def apply(data_dir, decisions_path, echo=print) -> Path:
    data_dir = Path(data_dir)
    recover(data_dir, echo)
    if not Path(decisions_path).is_file():
        raise UserError(f"{decisions_path}: decisions file not found (export it from {data_dir}/clean/report.html)")
    decisions = read_csv_input(decisions_path, "decisions file")
    if not {"img_name", "action"} <= set(decisions.columns):
        raise UserError(f"{decisions_path}: needs columns img_name,action[,new_label]")
    if "new_label" not in decisions.columns:
        decisions["new_label"] = ""
    df = read_annotations(data_dir)
    journal = plan(data_dir, decisions, df, source=decisions_path)
    if journal.empty:
        echo("nothing to do (every decision is keep)")
        return _journal_dir(data_dir)
    # one journal per apply, never overwritten: a time-ordered unique id
    jid = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]
    jdir = _journal_dir(data_dir)
    jdir.mkdir(parents=True, exist_ok=True)
    before, after, jpath = jdir / f"{jid}.before.csv", jdir / f"{jid}.after.csv", jdir / f"{jid}.csv"
    _copy_atomic(data_dir / ANNOTATIONS, before)  # undo restores this byte for byte
    atomic_write_csv(after, _annotations_after(df, journal))
    journal["annotations_before"] = before.name
    journal["annotations_after"] = after.name
    pending = {"mode": "apply", "journal": jpath.relative_to(data_dir).as_posix(),
               "annotations": after.relative_to(data_dir).as_posix()}
    manifest = _manifest_after(data_dir, journal)
    if manifest is not None:
        m_before, m_after = jdir / f"{jid}.manifest.before.csv", jdir / f"{jid}.manifest.after.csv"
        _copy_atomic(data_dir / MANIFEST, m_before)
        atomic_write_csv(m_after, manifest)
        journal["manifest_before"] = m_before.name
        pending["manifest"] = m_after.relative_to(data_dir).as_posix()
    atomic_write_csv(jpath, journal)
    # the marker makes the multi-file change crash-safe: any later apply/undo/clean rolls it forward
    atomic_write_text(_pending(data_dir), json.dumps(pending))
    recover(data_dir, echo=lambda *a: None)
    n = journal["action"].value_counts()
    echo(f"applied {int(n.get('relabel', 0))} relabels and {int(n.get('remove', 0))} removals (to quarantine/); "
         f"log: {jpath}; undo: pokemon-classifier clean {data_dir} --undo")
    return jpath


def undo(data_dir, journal_path=None, echo=print, all_: bool = False) -> int:
    """Undo the last apply (or JOURNAL_PATH, or with all_ every apply, newest first). Returns how many."""
    data_dir = Path(data_dir)
    recover(data_dir, echo)
    live = journals(data_dir)
    if journal_path is not None:
        jpath = Path(journal_path)
        read_journal(data_dir, jpath)
        later = [p for p in live if p.name > jpath.name and p.parent.resolve() == jpath.parent.resolve()]
        if later:
            raise UserError(f"{jpath}: {len(later)} later apply(s) must be undone first "
                            f"(pokemon-classifier clean {data_dir} --undo)")
        todo = [jpath]
    else:
        if not live:
            raise UserError(f"{_journal_dir(data_dir)}: nothing to undo")
        todo = live[::-1] if all_ else [live[-1]]
    for jpath in todo:
        journal = read_journal(data_dir, jpath)
        before = jpath.parent / journal["annotations_before"].iloc[0]
        pending = {"mode": "undo", "journal": os.path.relpath(jpath, data_dir),
                   "annotations": os.path.relpath(before, data_dir)}
        m_before = str(journal["manifest_before"].iloc[0]) if "manifest_before" in journal.columns else ""
        if m_before and m_before != "nan" and PurePosixPath(m_before).name == m_before \
                and (jpath.parent / m_before).is_file():
            pending["manifest"] = os.path.relpath(jpath.parent / m_before, data_dir)
        atomic_write_text(_pending(data_dir), json.dumps(pending))
        recover(data_dir, echo=lambda *a: None)
        echo(f"undid {len(journal)} changes from {jpath}")
    return len(todo)


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


def main(args) -> int:
    # temp files of a killed clean (fileio's ".<target>.<random>.tmp"), only those from before this run
    started = time.time()
    remove_stale_temps(args.data, [ANNOTATIONS], started)
    remove_stale_temps(args.out or args.data / "clean", ["candidates.csv", "report.html", ".pending.json"], started)
    if args.apply and args.undo:
        raise UserError("--apply and --undo are exclusive")
    if args.apply:
        apply(args.data, args.apply)
        return 0
    if args.all and args.undo is not True:
        raise UserError("--all goes with --undo and no journal: pokemon-classifier clean DATA --undo --all")
    if args.undo:
        undo(args.data, None if args.undo is True else args.undo, all_=args.all)
        return 0
    recover(args.data)
    read_annotations(args.data, purpose="clean")
    if args.weights:  # a bad checkpoint is refused before minutes of checking images, not after
        from pokemon_classifier.models import model_from_checkpoint, read_checkpoint

        model_from_checkpoint(read_checkpoint(args.weights), args.weights)
    cand = find_candidates(args.data, args.min_size, args.folds, args.weights, args.threshold, args.outliers,
                           args.progress)
    out = args.out or args.data / "clean"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out / "candidates.csv", cand)
    page = write_report(args.data, cand, out)
    counts = cand["finding"].value_counts()
    print("findings: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"wrote {page} and {out / 'candidates.csv'}")
    return 0
