"""`annotations.csv` (img_name,pokemon_id) for a data folder, and importing class-per-folder trees;
with the helpers every dataset command shares: reading and checking annotations.csv, safe image
paths inside the folder, parallel image checks and a process pool whose workers die with it.

    pokemon-classifier annotate data/                         # scan data/images, write annotations.csv
    pokemon-classifier annotate --from-folders PokemonData/ --out data/   # Kaggle layout -> ours
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd
from tqdm import tqdm

from pokemon_classifier import pokedex
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.fileio import atomic_write_csv, remove_stale_temps, temp_beside
from pokemon_classifier.images import is_image_file, load_image
from pokemon_classifier.runtime import default_workers

ANNOTATIONS = "annotations.csv"
IMAGES = "images"
MANIFEST = "manifest.csv"  # written by `download` (scrape.py): where each picture came from, and its `kind`
COLUMNS = ["img_name", "pokemon_id"]
FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass
class Checked:
    path: str
    ok: bool
    reason: str = ""
    width: int = 0
    height: int = 0
    format: str = ""


def class_files(img_dir, dex: int) -> list[tuple[Path, int]]:
    """(path, number) of the files of class `dex` in img_dir named <name><NNN>.<ext>, sorted by path."""
    out = []
    for p in Path(img_dir).glob(f"{pokedex.name(dex)}*"):  # 'mew*' also matches mewtwo: parsed below
        if p.name.startswith("."):
            continue
        try:
            found, num = pokedex.parse_filename(p.name)
        except UserError:
            continue
        if found == dex:
            out.append((p, num))
    return sorted(out)


def check_image(path) -> Checked:
    """Decode once; report size and format, or why it failed."""
    from PIL import Image

    try:
        im = load_image(path)
        with Image.open(path) as raw:
            fmt = raw.format or ""
        return Checked(str(path), True, "", im.width, im.height, fmt)
    except ImageError as e:
        return Checked(str(path), False, str(e).split(": ", 1)[-1])


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: a worker ends when its parent does, even on kill -9 of the parent.

    Linux delivers SIGKILL to the worker when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a
    daemon thread polls the parent id. Use as ProcessPoolExecutor(initializer=die_with_parent,
    initargs=(os.getpid(),)).
    """
    import signal
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool whose workers die with this process (no orphans after kill -9)."""
    return ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),))


def is_image_name(name: str) -> bool:
    """Whether `name` is one of the dataset's image names (<name><NNN>.<ext>)."""
    try:
        pokedex.parse_filename(name)
    except UserError:
        return False
    return True


def shown(name) -> str:
    """A file name as printable UTF-8: undecodable bytes as \\xNN (os.fsencode undoes surrogateescape)."""
    return os.fsencode(str(name)).decode("utf-8", "backslashreplace")


def check_images(paths, workers: int | None = None, desc: str = "decoding", progress: bool = True) -> list[Checked]:
    paths = [str(p) for p in paths]
    workers = workers or default_workers()
    if workers <= 1 or len(paths) < 64:
        return [check_image(p) for p in tqdm(paths, desc=desc, unit="img", leave=False, disable=not progress)]
    with worker_pool(workers) as ex:
        return list(tqdm(ex.map(check_image, paths, chunksize=32), total=len(paths), desc=desc,
                         unit="img", leave=False, disable=not progress))


def safe_image_path(data_dir: Path, img_name: str) -> Path:
    """DATA/images/<img_name>, refusing names that escape images/ (`../x`, `/etc/x`)."""
    p = PurePosixPath(str(img_name).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or str(img_name).strip() == "" or ":" in p.parts[0]:
        raise UserError(f"{img_name!r} in {data_dir / ANNOTATIONS}: img_name must stay inside images/")
    return Path(data_dir) / IMAGES / p


def read_annotations(data_dir, purpose: str | None = None) -> pd.DataFrame:
    """Read and validate DATA/annotations.csv -> DataFrame[img_name:str, pokemon_id:int]. With a
    `purpose` (a verb: "train", "evaluate"), a header-only file is a UserError saying so, before any work."""
    path = Path(data_dir) / ANNOTATIONS
    if not path.is_file():
        raise UserError(f"{path}: not found (run `pokemon-classifier annotate {data_dir}` first)")
    try:
        df = pd.read_csv(path, dtype={"img_name": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV ({' '.join(str(e).split())})") from None
    if list(df.columns[:2]) != COLUMNS:
        raise UserError(f"{path}: header must be img_name,pokemon_id (got {','.join(map(str, df.columns))})")
    ids = pd.to_numeric(df["pokemon_id"], errors="coerce")
    bad = df[ids.isna() | (ids < 1) | (ids > pokedex.NUM_CLASSES) | (ids != ids.round())]
    if len(bad):
        row = bad.iloc[0]
        raise UserError(f"{path}: pokemon_id must be 1..151, got {str(row['pokemon_id'])!r} for {row['img_name']} "
                        f"({len(bad)} bad rows)")
    df = df[COLUMNS].copy()
    df["pokemon_id"] = ids.astype(int)
    dup = df["img_name"].duplicated()
    if dup.any():
        raise UserError(f"{path}: img_name {df['img_name'][dup].iloc[0]!r} is listed twice")
    for name in df["img_name"]:
        safe_image_path(Path(data_dir), name)
    if purpose and df.empty:
        raise UserError(f"{path}: no images listed (only a header); nothing to {purpose}")
    return df.reset_index(drop=True)


def write_annotations(data_dir, df: pd.DataFrame) -> Path:
    path = Path(data_dir) / ANNOTATIONS
    df = df[COLUMNS].sort_values("img_name", kind="stable")
    atomic_write_csv(path, df)
    return path


def class_counts(df: pd.DataFrame) -> pd.Series:
    """Images per dex id, all 151 ids present (0 where missing), ascending."""
    return df["pokemon_id"].value_counts().reindex(pokedex.IDS, fill_value=0).sort_values(kind="stable")


def plot_class_counts(counts: pd.Series, path, min_per_class: int | None = None) -> None:
    from pokemon_classifier.fileio import atomic_savefig, subplots

    c = counts.sort_index()
    fig, ax = subplots(figsize=(22, 5))
    colors = ["tab:red" if min_per_class and v < min_per_class else "tab:blue" for v in c.values]
    ax.bar(range(len(c)), c.values, color=colors)
    ax.set_xticks(range(len(c)))
    ax.set_xticklabels([pokedex.display_name(i) for i in c.index], rotation=90, fontsize=6)
    ax.set_ylabel("images")
    title = f"Images per class ({int(c.sum())} images, {int((c > 0).sum())} classes)"
    if min_per_class:
        ax.axhline(min_per_class, color="tab:red", lw=0.8, ls="--")
        title += f"; red: under {min_per_class}"
    ax.set_title(title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=90)


@dataclass
class Annotated:
    """What annotate / import_from_folders made: the table, and the summary the annotate command prints."""
    df: pd.DataFrame
    lines: list[str]


def annotate(data_dir, min_per_class: int = 15, workers: int | None = None, plot: bool = True) -> Annotated:
    """Scan DATA/images, write DATA/annotations.csv (+ unreadable report, distribution plot)."""
    started = time.time()
    data_dir = Path(data_dir)
    img_dir = data_dir / IMAGES
    if not img_dir.is_dir():
        raise UserError(f"{img_dir}: no images/ folder (expected {data_dir}/images/<name><NNN>.jpg)")
    remove_stale_temps(data_dir, [ANNOTATIONS, "annotate_report.csv", "class_distribution.png"], started)
    files = sorted(p for p in img_dir.rglob("*") if is_image_file(p))
    if not files:
        raise UserError(f"{img_dir}: no files found")
    rows, bad = [], []
    named = []
    for p in files:
        rel = p.relative_to(img_dir).as_posix()
        if shown(rel) != rel:  # not valid UTF-8: it cannot go into a UTF-8 CSV; report it, keep the file
            bad.append({"img_name": shown(rel), "reason": "file name is not valid UTF-8; rename it"})
            continue
        try:
            named.append((rel, p, pokedex.id_from_filename(p.name)))
        except UserError as e:
            bad.append({"img_name": rel, "reason": str(e).split(": ", 1)[-1]})
    for (rel, _, dex), chk in zip(named, check_images([p for _, p, _ in named], workers)):
        if chk.ok:
            rows.append({"img_name": rel, "pokemon_id": dex})
        else:
            bad.append({"img_name": rel, "reason": chk.reason})
    df = pd.DataFrame(rows, columns=COLUMNS)
    if df.empty:
        raise UserError(f"{img_dir}: none of the {len(files)} files is a readable <name><NNN> image")
    out = write_annotations(data_dir, df)
    report = data_dir / "annotate_report.csv"
    if bad:
        atomic_write_csv(report, pd.DataFrame(bad, columns=["img_name", "reason"]))
    counts = class_counts(df)
    lines = ["images per class (ascending):"]
    lines += [f"  {pokedex.display_name(dex):<12} {n:4d}" for dex, n in counts.items()]
    few = counts[counts < min_per_class]
    for dex, n in few.items():
        lines.append(f"warning: {pokedex.display_name(dex)} has {n} images (< --min-per-class {min_per_class})")
    if plot:
        plot_class_counts(counts, data_dir / "class_distribution.png", min_per_class)
    lines.append(f"wrote {out}: {len(df)} images, {int((counts > 0).sum())} classes"
                 + (f"; {len(bad)} files left out, listed in {report}" if bad else ""))
    lines += [f"  left out: {b['img_name']}: {b['reason']}" for b in bad[:20]]
    return Annotated(df, lines)


def import_from_folders(src, out, workers: int | None = None, strict: bool = False) -> Annotated:
    """Copy SRC/<ClassName>/*.jpg (Kaggle layout) to OUT/images/<name><NNN><ext> and annotate OUT.

    Folder names go through the pokedex normaliser; folders that are not Gen-1 Pokemon (the Kaggle
    set has `Alolan Sandslash`) are skipped with one warning listing them, or refused with `strict`.
    Extensions come from the content. Existing images in OUT keep their numbers.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UserError(f"{src}: not a folder")
    folders = sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise UserError(f"{src}: no class folders inside (expected {src}/Pikachu/*.jpg ...)")
    unknown = []
    mapping = {}
    for d in folders:
        try:
            mapping[d] = pokedex.to_id(d.name)
        except UserError:
            unknown.append(shown(d.name))
    if unknown and (strict or not mapping):
        raise UserError(f"{src}: folders that are not Gen-1 Pokemon: {', '.join(unknown)}"
                        + ("" if mapping else " (and no Gen-1 folder at all)"))
    lines = []
    if unknown:
        lines.append(f"warning: skipped {len(unknown)} folders that are not Gen-1 Pokemon: {', '.join(unknown)} "
                     "(--strict refuses instead)")
    folders = [d for d in folders if d in mapping]
    img_dir = out / IMAGES
    img_dir.mkdir(parents=True, exist_ok=True)
    # a killed import leaves temp copies of <name><NNN>.<ext>; they are ours and safe to drop
    remove_stale_temps(img_dir, is_image_name, time.time())
    copied = skipped = 0
    for d in tqdm(folders, desc="importing", unit="class"):
        dex = mapping[d]
        last = max((n for _, n in class_files(img_dir, dex)), default=0)  # existing images keep their numbers
        files = sorted(p for p in d.rglob("*") if is_image_file(p))
        for chk in check_images(files, workers, desc=shown(d.name)):
            if not chk.ok:
                lines.append(f"skipped {shown(chk.path)}: {chk.reason}")
                skipped += 1
                continue
            last += 1
            ext = FORMAT_EXT.get(chk.format, Path(chk.path).suffix.lower() or ".jpg")
            dst = img_dir / f"{pokedex.name(dex)}{last:03d}{ext}"
            fd, tmp = temp_beside(dst)
            os.close(fd)
            shutil.copyfile(chk.path, tmp)
            os.replace(tmp, dst)
            copied += 1
    lines.append(f"copied {copied} images from {len(folders)} folders into {img_dir}"
                 + (f"; skipped {skipped}" if skipped else ""))
    done = annotate(out, workers=workers)
    empty = [pokedex.display_name(i) for i in pokedex.IDS if i not in set(done.df["pokemon_id"])]
    if empty:
        done.lines.append(f"warning: {len(empty)} of the {pokedex.NUM_CLASSES} classes got no images: "
                          + ", ".join(empty))
    done.lines[:0] = lines
    return done
