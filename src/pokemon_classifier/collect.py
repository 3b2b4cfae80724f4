"""Keep the pictures users correct in the app as training data (`serve --collect DIR`).

    pokemon-classifier serve --collect data/collected     # the page gets "Wrong? Pick the right one"
    curl -F file=@photo.jpg -F dex_id=25 http://127.0.0.1:7860/api/feedback
    curl -F file=@cat.jpg -F answer=not-pokemon http://127.0.0.1:7860/api/feedback   # a negative

DIR ends up in the project's data format: DIR/images/<name><NNN>.<ext> plus DIR/annotations.csv
(img_name,pokemon_id), ready for `clean`, `split` and `train`. The file name comes from the chosen
class and the next number free in both the files and the rows, the extension from the decoded image
format; nothing from the request names a file. JPEG (MPO too: phones' multi-picture JPEGs are valid
JPEGs), PNG, WebP, GIF, BMP and TIFF are kept byte for byte; HEIC/HEIF and AVIF are stored as a
quality-95 JPEG of the decoded picture (4:4:4, colour profile kept, EXIF rotation applied), which every
tool reads. The same picture is stored once (SHA-256 of the stored bytes; a second save of it is
refused with AlreadySaved, whatever its label), and a byte and picture budget caps the folder.

The answers "not a Pokémon" and "a Pokémon from a later generation" are negatives: they go to
DIR/negatives/images/<answer><NNN>.<ext> plus DIR/negatives/manifest.csv (img_name,kind,source), the
folder layout `calibrate --negatives DIR/negatives` reads as is (openset.read_negatives). They share
the lock, the one-picture-once rule and the budget with the positive corrections.

Saving holds a thread lock and an flock on DIR/.collect.lock, so concurrent posts (threads, several
server processes, `annotate --add`) never pick the same number or lose a row. Each picture is written
(temp + fsync + rename) before its row, so a kill leaves at worst a picture without a row or a .tmp
file; `serve --collect` repairs both at start (recover()), and a rerun of `annotate --add` completes.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pokemon_classifier import pokedex
from pokemon_classifier.annotations import (ANNOTATIONS, COLUMNS, FORMAT_EXT, IMAGES, read_annotations,
                                            write_annotations)
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.fileio import atomic_open
from pokemon_classifier.images import load_image

MAX_BYTES = 10 * 1024 * 1024
KEPT_AS_IS = {**FORMAT_EXT, "MPO": ".jpg"}  # MPO = a JPEG followed by more pictures: JPEG readers read the first
CONVERTED = {"HEIF", "AVIF"}  # stored as a JPEG: not every image tool reads them
UNLISTED = "unlisted"  # where recover() moves pictures that have no row
_TEMP = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")  # fileio.atomic_open's temp names
NEGATIVES = "negatives"  # DIR/negatives/: what `calibrate --negatives` reads
NEGATIVES_MANIFEST = "manifest.csv"
NEGATIVE_COLUMNS = ["img_name", "kind", "source"]  # the shared negatives' manifest columns
# the app's answer -> the manifest's kind: "photo" as in the shared negatives (what a phone or webcam
# shows that is not a Pokémon); "later-gen" not "gen...": read_negatives groups "gen*" kinds by the
# species number in the file name, and these names carry a running number instead
NEGATIVE_KINDS = {"not-pokemon": "photo", "later-gen": "later-gen"}
NEGATIVE_SOURCE = "app correction (serve --collect)"


class CollectFull(UserError):
    """The collect folder's byte or picture budget is spent (answered with 413)."""


class AlreadySaved(UserError):
    """This picture is already in the collect folder (answered with 409): one correction per picture,
    so a double click or a replayed request cannot store it twice or under a second label."""

    def __init__(self, saved: str):
        self.saved = saved  # relative to the collect folder: images/pikachu001.jpg
        super().__init__(f"this picture was already saved ({saved}); one correction per picture")


@dataclass
class Added:
    """What add_folder did: pictures copied, already there, left out by --exclude, rows restored for
    pictures an interrupted run had copied."""
    added: int = 0
    skipped: int = 0
    left_out: int = 0
    restored: int = 0


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def stored_form(data: bytes) -> tuple[bytes, str]:
    """(bytes to store, extension) for an uploaded picture: the original bytes for the formats every
    reader handles, a faithful JPEG for HEIC/AVIF. ImageError for anything load_image refuses."""
    img = load_image(data)  # the whole picture must decode (and pass the shape guard), not just its header
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        fmt, icc = im.format or "", im.info.get("icc_profile")
    if fmt in KEPT_AS_IS:
        return data, KEPT_AS_IS[fmt]
    if fmt in CONVERTED:
        out = io.BytesIO()
        img.save(out, "JPEG", quality=95, subsampling=0, icc_profile=icc)
        return out.getvalue(), ".jpg"
    raise ImageError(f"<upload>: {fmt or 'unknown'} pictures are not kept "
                     "(send JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC or AVIF)")


class Collector:
    """Saves (picture, dex id) pairs into a data folder; thread- and process-safe.

    max_bytes caps one picture; budget_bytes / max_files cap the folder (None: no cap)."""

    def __init__(self, data_dir, max_bytes: int = MAX_BYTES, budget_bytes: int | None = None,
                 max_files: int | None = None, recover: bool = False):
        self.dir = Path(data_dir)
        self.max_bytes = int(max_bytes)
        self.budget_bytes, self.max_files = budget_bytes, max_files
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"{self.dir}: --collect needs a folder, this is a file")
        (self.dir / IMAGES).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._indexes: dict[str, tuple] = {}  # per table: (its csv's signature, {sha256: name}, bytes, pictures)
        self.repaired = self.recover() if recover else ""
        if (self.dir / ANNOTATIONS).exists():
            read_annotations(self.dir)  # refuse to start on a broken annotations.csv rather than on the first post
        if (self.negatives / NEGATIVES_MANIFEST).exists():
            self._negative_rows()  # and on a broken negatives/manifest.csv

    @contextlib.contextmanager
    def _locked(self):
        with self._lock, open(self.dir / ".collect.lock", "a+b") as f:
            try:
                import fcntl
            except ImportError:  # Windows: the thread lock alone (one server process)
                yield
                return
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- reading the folder (lock held)
    def _rows(self) -> pd.DataFrame:
        if not (self.dir / ANNOTATIONS).exists():
            return pd.DataFrame(columns=COLUMNS)
        try:
            return read_annotations(self.dir)
        except UserError as e:  # the server's path stays in its log line, not in API answers
            raise UserError(str(e).replace(str(self.dir / ANNOTATIONS), ANNOTATIONS)) from None

    def _remove_temps(self) -> int:
        """Temp files of writes that were killed: safe to remove while we hold the lock (every writer
        of this folder's pictures and rows takes it)."""
        n = 0
        for folder, keep in ((self.dir / IMAGES, None), (self.dir, f".{ANNOTATIONS}."),
                             (self.negatives / IMAGES, None), (self.negatives, f".{NEGATIVES_MANIFEST}.")):
            if not folder.is_dir():
                continue
            for p in folder.glob(".*.tmp"):
                if _TEMP.fullmatch(p.name) and (keep is None or p.name.startswith(keep)) and p.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                        n += 1
        return n

    def _present(self, rows: pd.DataFrame):
        """Mask of the rows whose picture exists."""
        import numpy as np

        return np.array([(self.dir / IMAGES / n).is_file() for n in rows["img_name"]], dtype=bool)

    def _numbers(self, rows: pd.DataFrame) -> dict[int, int]:
        """The highest number in use per class, from the files (also those in unlisted/) AND the rows: a
        deleted last picture whose row is still listed must not give its number out again."""
        top: dict[int, int] = {}
        names = [p.name for p in (self.dir / IMAGES).iterdir()] + list(rows["img_name"])
        if (self.dir / UNLISTED).is_dir():  # moved aside by recover(): may be moved back
            names += [p.name for p in (self.dir / UNLISTED).iterdir()]
        for name in names:
            with contextlib.suppress(UserError):
                dex, num = pokedex.parse_filename(name)
                top[dex] = max(top.get(dex, 0), num)
        return top

    def _listed_index(self, rows: pd.DataFrame):
        """{sha256: name}, bytes and count of the listed pictures; rebuilt only when annotations.csv changed."""
        return self._hash_index(self.dir / ANNOTATIONS, self.dir / IMAGES, rows)

    def _hash_index(self, table: Path, images: Path, rows: pd.DataFrame):
        """{sha256: name}, bytes and count of the pictures `rows` of `table` list in `images`."""
        # the row count too: a picture a reviewer deleted (its row filtered out) must leave the index
        sig = (table.stat().st_mtime_ns, table.stat().st_size, len(rows)) if table.exists() else None
        cached = self._indexes.get(str(table))
        if cached is None or cached[0] != sig:
            hashes, size = {}, 0
            for name in rows["img_name"]:
                with contextlib.suppress(FileNotFoundError):
                    data = (images / name).read_bytes()
                    hashes[_sha256(data)] = name
                    size += len(data)
            cached = self._indexes[str(table)] = (sig, hashes, size, len(rows))
        return cached

    # ---------------------------------------------------------------- the negatives (lock held)
    @property
    def negatives(self) -> Path:
        return self.dir / NEGATIVES

    def _negative_rows(self) -> pd.DataFrame:
        """DIR/negatives/manifest.csv (empty when absent); a one-line UserError naming it when broken."""
        from pokemon_classifier.annotations import safe_image_path
        from pokemon_classifier.fileio import read_csv_input

        path = self.negatives / NEGATIVES_MANIFEST
        if not path.exists():
            return pd.DataFrame(columns=NEGATIVE_COLUMNS)
        where = f"{NEGATIVES}/{NEGATIVES_MANIFEST}"  # API answers never show the server's paths
        try:
            rows = read_csv_input(path, "negatives manifest")
            if not {"img_name", "kind"} <= set(rows.columns):
                raise UserError(f"{path}: header must include img_name,kind (got {','.join(rows.columns)})")
            for name in rows["img_name"]:
                safe_image_path(self.negatives, name)
        except UserError as e:
            raise UserError(str(e).replace(str(path), where).replace(str(self.negatives / ANNOTATIONS), where)) from None
        return rows.reindex(columns=list(dict.fromkeys(NEGATIVE_COLUMNS + list(rows.columns))), fill_value="")

    def _negatives_present(self, rows: pd.DataFrame):
        import numpy as np

        return np.array([(self.negatives / IMAGES / n).is_file() for n in rows["img_name"]], dtype=bool)

    def _negative_index(self, rows: pd.DataFrame):
        return self._hash_index(self.negatives / NEGATIVES_MANIFEST, self.negatives / IMAGES, rows)

    def _admit(self, stored: bytes, rows: pd.DataFrame, negatives: pd.DataFrame) -> None:
        """Refuse a picture already kept (as a Pokémon or as a negative) or one over the budget, which
        the positive and the negative corrections share."""
        _, hashes, size, count = self._listed_index(rows)
        _, neg_hashes, neg_size, neg_count = self._negative_index(negatives)
        digest = _sha256(stored)
        if digest in hashes:
            raise AlreadySaved(f"{IMAGES}/{hashes[digest]}")
        if digest in neg_hashes:
            raise AlreadySaved(f"{NEGATIVES}/{IMAGES}/{neg_hashes[digest]}")
        self._check_budget(size + neg_size + len(stored), count + neg_count + 1)

    # ---------------------------------------------------------------- serve --collect
    def recover(self) -> str:
        """Make a folder a kill or a hand review left inconsistent usable again; returns one line saying
        what was done ('' when nothing was needed). Rows whose picture is gone are dropped (deleting a
        picture is how a reviewer throws it out), pictures without a row (a save killed between the two
        writes) are moved to DIR/unlisted/, .tmp files removed, a row listed twice kept once."""
        done = []
        with self._locked():
            if n := self._remove_temps():
                done.append(f"removed {n} unfinished .tmp files")
            path = self.dir / ANNOTATIONS
            if path.exists():
                try:
                    raw = pd.read_csv(path, dtype={"img_name": str})
                except (ValueError, UnicodeDecodeError):  # pandas' errors are ValueErrors: reported below
                    raw = None
                if raw is not None and list(raw.columns[:2]) == COLUMNS and raw["img_name"].duplicated().any():
                    n = int(raw["img_name"].duplicated().sum())
                    write_annotations(self.dir, raw.drop_duplicates("img_name"))
                    done.append(f"dropped {n} repeated rows")
            rows = read_annotations(self.dir) if path.exists() else pd.DataFrame(columns=COLUMNS)
            gone = ~self._present(rows)
            if gone.any():
                write_annotations(self.dir, rows[~gone])
                done.append(f"dropped {int(gone.sum())} rows whose picture is gone")
            loose = _move_unlisted(self.dir, set(rows["img_name"]))
            if loose:
                done.append(f"moved {loose} pictures without a row to {self.dir / UNLISTED}")
            if (self.negatives / IMAGES).is_dir():
                done += self._recover_negatives()
        return f"{self.dir}: repaired: " + "; ".join(done) if done else ""

    def _recover_negatives(self) -> list[str]:
        """recover() for DIR/negatives: rows of deleted pictures and repeated rows dropped, pictures
        without a row (a save killed between its two writes) moved to DIR/negatives/unlisted/, outside
        the images/ folder calibrate reads (their kind is unknown)."""
        from pokemon_classifier.fileio import atomic_write_csv

        done = []
        rows = self._negative_rows()
        keep = self._negatives_present(rows) & ~rows["img_name"].duplicated().to_numpy()
        if not keep.all():
            atomic_write_csv(self.negatives / NEGATIVES_MANIFEST, rows[keep])
            done.append(f"dropped {int((~keep).sum())} negatives rows whose picture is gone or repeated")
        loose = _move_unlisted(self.negatives, set(rows["img_name"]))
        if loose:
            done.append(f"moved {loose} negatives without a row to {self.negatives / UNLISTED}")
        return done

    def _stored(self, data: bytes) -> tuple[bytes, str]:
        if not data:
            raise UserError("empty upload")
        if len(data) > self.max_bytes:
            raise UserError(f"upload larger than {self.max_bytes // (1024 * 1024)} MB")
        return stored_form(data)

    def _present_negatives(self) -> pd.DataFrame:
        negatives = self._negative_rows()
        return negatives[self._negatives_present(negatives)]

    def save(self, data: bytes, dex_id) -> str:
        """Store one picture as class `dex_id`; returns its img_name ('pikachu004.jpg').

        Raises UserError for a bad dex id, an empty or oversized upload, AlreadySaved when the same
        picture is kept already (as any class or as a negative), CollectFull when the budget is spent,
        ImageError for a non-image."""
        try:
            dex = pokedex._check_id(int(str(dex_id).strip()))
        except (ValueError, TypeError):
            raise UserError(f"dex_id {dex_id!r} is not a number 1..{pokedex.NUM_CLASSES}") from None
        stored, ext = self._stored(data)
        with self._locked():
            listed = self._rows()
            top = self._numbers(listed)  # numbers of deleted pictures are not given out again
            rows = listed[self._present(listed)]  # pictures a reviewer deleted: their rows go with the next write
            self._admit(stored, rows, self._present_negatives())
            name = f"{pokedex.name(dex)}{top.get(dex, 0) + 1:03d}{ext}"
            self._write_picture(name, stored)
            write_annotations(self.dir, pd.concat([rows, pd.DataFrame([{"img_name": name, "pokemon_id": dex}])],
                                                  ignore_index=True))
            self._indexes.clear()
        return name

    def save_negative(self, data: bytes, answer: str) -> str:
        """Store one picture the user says is not a Gen-1 Pokémon (`answer`: a key of NEGATIVE_KINDS)
        in DIR/negatives; returns its img_name ('not-pokemon003.jpg'). Raises as save() does."""
        from pokemon_classifier.fileio import atomic_write_csv

        kind = NEGATIVE_KINDS.get(str(answer).strip())
        if kind is None:
            raise UserError(f"answer {answer!r} is not one of {', '.join(NEGATIVE_KINDS)}")
        answer = str(answer).strip()
        stored, ext = self._stored(data)
        with self._locked():
            rows = self._rows()
            rows = rows[self._present(rows)]
            listed = self._negative_rows()
            negatives = listed[self._negatives_present(listed)]  # deleted pictures' rows go with this write
            self._admit(stored, rows, negatives)
            name = f"{answer}{self._negative_number(answer, listed) + 1:03d}{ext}"
            with atomic_open(self.negatives / IMAGES / name, "wb") as f:  # the picture before its row
                f.write(stored)
            new = pd.DataFrame([{"img_name": name, "kind": kind, "source": NEGATIVE_SOURCE}])
            atomic_write_csv(self.negatives / NEGATIVES_MANIFEST,
                             pd.concat([negatives, new], ignore_index=True).sort_values("img_name", kind="stable"))
            self._indexes.clear()
        return name

    def _negative_number(self, answer: str, rows: pd.DataFrame) -> int:
        """The highest number `answer` uses in the negatives' files (unlisted/ too) and rows."""
        pattern = re.compile(re.escape(answer) + r"(\d+)\.[A-Za-z0-9]+")
        names = list(rows["img_name"])
        for folder in (self.negatives / IMAGES, self.negatives / UNLISTED):
            if folder.is_dir():
                names += [p.name for p in folder.iterdir()]
        return max((int(m[1]) for n in names if (m := pattern.fullmatch(str(n)))), default=0)

    def _check_budget(self, size: int, count: int) -> None:
        if self.budget_bytes is not None and size > self.budget_bytes:
            raise CollectFull(f"the collect folder is full ({self.budget_bytes / 1e6:g} MB budget, "
                              "--collect-max-mb); review it and move pictures out")
        if self.max_files is not None and count > self.max_files:
            raise CollectFull(f"the collect folder is full ({self.max_files} pictures, --collect-max-files); "
                              "review it and move pictures out")

    def _write_picture(self, name: str, data: bytes) -> None:
        with atomic_open(self.dir / IMAGES / name, "wb") as f:
            f.write(data)

    # ---------------------------------------------------------------- annotate --add
    def add_folder(self, src, exclude=()) -> Added:
        """`annotate DATA --add SRC`: copy every annotated picture of SRC (e.g. a --collect folder) into
        this data folder under the next free numbers, so `split` and `train` see both. Pictures whose
        bytes are already listed here are skipped, so running it twice adds nothing; names in `exclude`
        are left out. The whole run holds the folder's lock, so two runs never both add a picture.

        Order: every picture is written first, the rows once at the end. A kill leaves pictures without
        rows; the rerun finds them by content and lists them instead of copying them again."""
        from pokemon_classifier.annotations import safe_image_path

        src = Path(src)
        rows = read_annotations(src, purpose="add")
        left_out = rows["img_name"].isin(set(exclude))
        rows = rows[~left_out]
        paths = [safe_image_path(src, n) for n in rows["img_name"]]
        for path in paths:
            if not path.is_file():
                raise UserError(f"{path}: listed in {src / ANNOTATIONS} but missing")
        result = Added(left_out=int(left_out.sum()))
        with self._locked():
            self._remove_temps()
            here = self._rows()
            _, have, _, _ = self._listed_index(here)
            have = dict(have)
            listed = set(here["img_name"])
            unlisted = {}  # pictures here without a row: an interrupted run's copies, found by content
            for p in (self.dir / IMAGES).iterdir():
                if p.is_file() and not p.name.startswith(".") and p.name not in listed:
                    unlisted.setdefault(_sha256(p.read_bytes()), p.name)
            top = self._numbers(here)
            new = []
            for path, dex in zip(paths, rows["pokemon_id"]):
                dex = int(dex)
                stored, ext = stored_form(path.read_bytes())
                digest = _sha256(stored)
                if digest in have:
                    result.skipped += 1
                    continue
                name = unlisted.get(digest)
                if name is not None and pokedex.id_from_filename(name) == dex:
                    result.restored += 1
                else:
                    top[dex] = top.get(dex, 0) + 1
                    name = f"{pokedex.name(dex)}{top[dex]:03d}{ext}"
                    self._write_picture(name, stored)
                    result.added += 1
                have[digest] = name
                new.append({"img_name": name, "pokemon_id": dex})
            if new:
                write_annotations(self.dir, pd.concat([here, pd.DataFrame(new, columns=COLUMNS)], ignore_index=True))
            self._indexes.clear()
        return result


def _move_unlisted(folder: Path, listed: set[str]) -> int:
    """Move folder/images/* without a row (a save killed between its two writes) to folder/unlisted/,
    never over an existing file; returns how many moved."""
    loose = [p for p in (folder / IMAGES).iterdir()
             if p.is_file() and not p.name.startswith(".") and p.name not in listed]
    for p in loose:
        dst = folder / UNLISTED / p.name
        dst.parent.mkdir(exist_ok=True)
        while dst.exists():
            dst = dst.with_name("_" + dst.name)
        shutil.move(p, dst)
    return len(loose)
