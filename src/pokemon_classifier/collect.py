"""Keep the pictures users correct in the app as training data (`serve --collect DIR`).

    pokemon-classifier serve --collect data/collected     # the page gets "Wrong? Pick the right one"
    curl -F file=@photo.jpg -F dex_id=25 http://127.0.0.1:7860/api/feedback

DIR ends up in the project's data format: DIR/images/<name><NNN>.<ext> plus DIR/annotations.csv
(img_name,pokemon_id), ready for `clean`, `split` and `train`. The file name comes from the chosen
class and the next free number, the extension from the decoded image format; nothing from the request
names a file. Saving holds a thread lock and an flock on DIR/.collect.lock, so concurrent posts (threads
or several server processes) never pick the same number or lose an annotations row.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from pathlib import Path

import pandas as pd

from pokemon_classifier import pokedex
from pokemon_classifier.annotations import (ANNOTATIONS, COLUMNS, FORMAT_EXT, IMAGES, class_files,
                                            read_annotations, write_annotations)
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.fileio import atomic_open
from pokemon_classifier.images import load_image

MAX_BYTES = 10 * 1024 * 1024


class Collector:
    """Saves (picture, dex id) pairs into a data folder; thread- and process-safe."""

    def __init__(self, data_dir, max_bytes: int = MAX_BYTES):
        self.dir = Path(data_dir)
        self.max_bytes = int(max_bytes)
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"{self.dir}: --collect needs a folder, this is a file")
        (self.dir / IMAGES).mkdir(parents=True, exist_ok=True)
        if (self.dir / ANNOTATIONS).exists():
            read_annotations(self.dir)  # refuse to start on a broken annotations.csv rather than on the first post
        self._lock = threading.Lock()

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

    def save(self, data: bytes, dex_id) -> str:
        """Store one picture as class `dex_id`; returns its img_name ('pikachu004.jpg').

        Raises UserError for a bad dex id, an empty or oversized upload, ImageError for a non-image."""
        try:
            dex = pokedex._check_id(int(str(dex_id).strip()))
        except (ValueError, TypeError):
            raise UserError(f"dex_id {dex_id!r} is not a number 1..{pokedex.NUM_CLASSES}") from None
        if not data:
            raise UserError("empty upload")
        if len(data) > self.max_bytes:
            raise UserError(f"upload larger than {self.max_bytes // (1024 * 1024)} MB")
        load_image(data)  # the whole picture must decode, not just its header
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
        ext = FORMAT_EXT.get(fmt)
        if ext is None:
            raise ImageError(f"<upload>: {fmt or 'unknown'} pictures are not kept (send JPEG, PNG, WebP, GIF, BMP or TIFF)")
        img_dir = self.dir / IMAGES
        with self._locked():
            last = max((n for _, n in class_files(img_dir, dex)), default=0)
            name = f"{pokedex.name(dex)}{last + 1:03d}{ext}"
            with atomic_open(img_dir / name, "wb") as f:  # the original bytes: no re-encoding loss
                f.write(data)
            path = self.dir / ANNOTATIONS
            df = read_annotations(self.dir) if path.exists() else pd.DataFrame(columns=COLUMNS)
            row = pd.DataFrame([{"img_name": name, "pokemon_id": dex}], columns=COLUMNS)
            try:
                write_annotations(self.dir, pd.concat([df, row], ignore_index=True))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(img_dir / name)  # no image without its row
                raise
        return name

    def add_folder(self, src, echo=print, exclude=()) -> tuple[int, int]:
        """`annotate DATA --add SRC`: copy every annotated picture of SRC (e.g. a --collect folder) into
        this data folder under the next free numbers, so `split` and `train` see both. Files whose bytes
        are already here are skipped, so running it twice adds nothing; names in `exclude` are left out.
        Returns (added, skipped)."""
        from pokemon_classifier.annotations import safe_image_path
        from pokemon_classifier.fileio import sha256_file

        src = Path(src)
        rows = read_annotations(src, purpose="add")
        left_out = rows["img_name"].isin(set(exclude))
        if left_out.any():
            echo(f"left out {int(left_out.sum())} pictures of {src} (--exclude)")
        rows = rows[~left_out]
        have = {sha256_file(p) for p in (self.dir / IMAGES).rglob("*") if p.is_file()}
        added = skipped = 0
        for name, dex in zip(rows["img_name"], rows["pokemon_id"]):
            path = safe_image_path(src, name)
            if not path.is_file():
                raise UserError(f"{path}: listed in {src / ANNOTATIONS} but missing")
            digest = sha256_file(path)
            if digest in have:
                skipped += 1
                continue
            self.save(path.read_bytes(), int(dex))
            have.add(digest)
            added += 1
        echo(f"added {added} pictures from {src} to {self.dir} ({skipped} already there)")
        return added, skipped
