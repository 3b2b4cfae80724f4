"""Atomic writes: write to a temp file beside the target, fsync, then rename.

A crash at any point leaves either the old file or the new one, never half of one. Also the checks
every command makes on the files it is given: user CSVs (read_csv_input) and --out paths (out_file,
out_dir), so that a bad one is a one-line error naming it before any work is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator


# The one temp-file name of the package: ".<target>.<mkstemp's 8 random chars>.tmp", beside the
# target. A sweep after a killed run removes only names of this shape for its own targets, so a
# user's `.notes.tmp` in the same folder is never touched.
_TEMP = re.compile(r"\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp")


def temp_beside(path) -> tuple[int, Path]:
    """(open descriptor, path) of a new, empty temp file for `path`, named by the package's convention."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the file it becomes gets normal permissions
    return fd, Path(tmp)


def remove_stale_temps(folder, targets: Iterable[str] | Callable[[str], bool], older_than: float) -> list[Path]:
    """Delete the temp files (see temp_beside) that a killed run left for `targets` in `folder` (target
    names, or a test on a target name), only those older than `older_than` (this run's start), never
    anything else."""
    wanted = targets if callable(targets) else set(targets).__contains__
    removed = []
    folder = Path(folder)
    for p in folder.glob(".*.tmp"):
        m = _TEMP.fullmatch(p.name)
        try:
            if m and wanted(m["target"]) and p.is_file() and p.stat().st_mtime < older_than:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:
            pass
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def atomic_write_csv(path, df) -> None:
    """Write a pandas DataFrame as CSV atomically (no index)."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        df.to_csv(f, index=False)


def atomic_torch_save(obj, path) -> None:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_save_npy(path, arr) -> None:
    """np.save atomically (the caches: a killed run must not leave a truncated array that loads)."""
    import numpy as np

    with atomic_open(path, "wb") as f:
        np.save(f, arr)


def subplots(*args, **kwargs):
    """(figure, axes) without pyplot: no global state, and the caller's backend (a notebook's inline
    plots, a GUI) is left alone, which `matplotlib.use("Agg")` in a library would break."""
    from matplotlib.figure import Figure

    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def atomic_savefig(fig, path, **kwargs) -> None:
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", **kwargs)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_csv_input(path, what: str, dtype=str, keep_default_na: bool = False, **kwargs):
    """A user-supplied CSV as a DataFrame, or a one-line UserError naming the file (missing, empty, not
    UTF-8, ragged): pandas' own messages span lines and name no file."""
    import pandas as pd

    from pokemon_classifier.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        return pd.read_csv(path, dtype=dtype, keep_default_na=keep_default_na, encoding="utf-8", **kwargs)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file (expected a {what} with a header row)") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (expected a {what})") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise UserError(f"{path}: not a well-formed CSV ({' '.join(str(e).split())})") from None


def _check_parents(path: Path) -> None:
    import argparse

    for parent in path.parents:  # the nearest existing ancestor must be a folder, or mkdir fails later
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{path}: {parent} is a file, not a folder")
            return


def out_file(value) -> Path:
    """argparse `type=` for an output file: refused at parse time when it names a folder (the final
    rename would fail after all the work) or lies under a file."""
    import argparse

    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: is a folder (expected a file name)")
    _check_parents(path)
    return path


def out_dir(value) -> Path:
    """argparse `type=` for an output folder: refused at parse time when it is an existing file."""
    import argparse

    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: is a file (expected a folder)")
    _check_parents(path)
    return path
