"""clean --apply / --undo: relabel (rename) and remove (quarantine) images, journaled so that every
step can be undone and a crash half-way rolls forward.

    pokemon-classifier clean data/ --apply decisions.csv    # relabel (rename) / remove (quarantine)
    pokemon-classifier clean data/ --undo                   # undo the last apply
    pokemon-classifier clean data/ --undo --all             # back to the original, byte for byte

Nothing is ever deleted: removals go to DATA/quarantine/, and every apply gets its own journal
(DATA/clean/journal/<id>.csv with annotation snapshots).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pandas as pd

from pokemon_classifier import pokedex
from pokemon_classifier.annotations import ANNOTATIONS, COLUMNS, MANIFEST, class_files, read_annotations, safe_image_path
from pokemon_classifier.errors import UserError
from pokemon_classifier.fileio import atomic_open, atomic_write_csv, atomic_write_text, read_csv_input


@dataclass
class Outcome:
    """What an apply or undo did: the lines the clean command prints, and the journal written or the count undone."""
    lines: list[str] = field(default_factory=list)
    journal: Path | None = None
    undone: int = 0


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


def recover(data_dir: Path) -> str:
    """Finish an --apply/--undo that crashed half-way (files moved, annotations not yet written).

    Returns the line that says what it finished, or "" when nothing was pending.
    """
    marker = _pending(data_dir)
    if not marker.is_file():
        return ""
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
    return f"finished an interrupted {info['mode']} from {info['journal']}"


def journals(data_dir: Path) -> list[Path]:
    """Applied journals not yet undone, oldest first (ids sort by time)."""
    jdir = _journal_dir(data_dir)
    found = sorted(p for p in jdir.glob("*.csv") if not p.name.endswith((".before.csv", ".after.csv")))
    return [p for p in found if not _undone_marker(p).exists()]


def apply(data_dir, decisions_path) -> Outcome:
    data_dir = Path(data_dir)
    done = Outcome([line for line in [recover(data_dir)] if line])
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
        done.lines.append("nothing to do (every decision is keep)")
        done.journal = _journal_dir(data_dir)
        return done
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
    recover(data_dir)
    n = journal["action"].value_counts()
    done.lines.append(f"applied {int(n.get('relabel', 0))} relabels and {int(n.get('remove', 0))} removals "
                      f"(to quarantine/); log: {jpath}; undo: pokemon-classifier clean {data_dir} --undo")
    done.journal = jpath
    return done


def undo(data_dir, journal_path=None, all_: bool = False) -> Outcome:
    """Undo the last apply (or JOURNAL_PATH, or with all_ every apply, newest first); `undone` says how many."""
    data_dir = Path(data_dir)
    done = Outcome([line for line in [recover(data_dir)] if line])
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
        recover(data_dir)
        done.lines.append(f"undid {len(journal)} changes from {jpath}")
    done.undone = len(todo)
    return done
