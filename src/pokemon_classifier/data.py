"""Datasets over `annotations.csv` + `images/`, and the decode-once uint8 cache used for training.

    ds = ImageDataset("data/", transform=eval_transform(pre))           # reads files every time
    x8 = build_cache("data/", df, pre)                                  # (N,3,R,R) uint8, on disk
    ds = TensorDataset8(x8, labels, train_transform(pre))               # augments uint8 tensors
    for rows, x in readable_batches(paths, pre, errors): ...            # inference batches, unreadable rows skipped
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.functional import pil_modes_mapping
from torch.utils.data import Dataset
from tqdm import tqdm

from pokemon_classifier.annotations import read_annotations, safe_image_path, worker_pool
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.fileio import atomic_save_npy
from pokemon_classifier.images import load_image
from pokemon_classifier.presets import eval_transform, interp, resize_size
from pokemon_classifier.runtime import cache_dir, default_workers


def resolve_paths(data_dir, df: pd.DataFrame) -> list[Path]:
    """Image paths for df rows; every missing file is listed in one error (not a crash mid-epoch)."""
    data_dir = Path(data_dir)
    paths = [safe_image_path(data_dir, n) for n in df["img_name"]]
    missing = [str(p.relative_to(data_dir)) for p in paths if not p.is_file()]
    if missing:
        more = f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""
        raise UserError(f"{data_dir}: {len(missing)} images listed in annotations.csv are missing: "
                        f"{', '.join(missing[:10])}{more}")
    return paths


class ImageDataset(Dataset):
    """(image tensor, label = pokemon_id - 1) for every row of annotations.csv (or of `df`)."""

    def __init__(self, data_dir, transform=None, df: pd.DataFrame | None = None):
        self.data_dir = Path(data_dir)
        self.df = (read_annotations(data_dir) if df is None else df).reset_index(drop=True)
        self.paths = resolve_paths(self.data_dir, self.df)
        self.labels = (self.df["pokemon_id"].to_numpy() - 1).astype(np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        img = load_image(self.paths[i])
        x = self.transform(img) if self.transform else img
        return x, int(self.labels[i])


class TensorDataset8(Dataset):
    """Items of a uint8 (N,3,R,R) array/tensor, transformed on the fly (augmentation on uint8)."""

    def __init__(self, images, labels, transform=None):
        self.images, self.labels, self.transform = images, np.asarray(labels, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(np.array(self.images[i]))  # a copy: the cache may be a read-only memmap
        return (self.transform(x) if self.transform else x), int(self.labels[i])


def fingerprint(data_dir, df: pd.DataFrame) -> str:
    """Hash of (name, label, size, mtime) of every listed image: identifies the data a model saw."""
    h = hashlib.sha256()
    for name, dex in zip(df["img_name"], df["pokemon_id"]):
        st = safe_image_path(Path(data_dir), name).stat()
        h.update(f"{name}\0{dex}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def decode_resized(path, res: int, interpolation: str = "bicubic") -> np.ndarray:
    """Decode, resize the shorter side to `res`, centre crop res x res -> uint8 (3,res,res)."""
    img = load_image(path)
    w, h = img.size
    s = res / min(w, h)
    nw, nh = max(res, round(w * s)), max(res, round(h * s))
    resample = pil_modes_mapping[interp(interpolation)]  # the same filter as the eval transform
    img = img.resize((nw, nh), resample, reducing_gap=3.0)
    left, top = (nw - res) // 2, (nh - res) // 2
    img = img.crop((left, top, left + res, top + res))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def _decode_or_error(path, res, interpolation):
    try:
        return decode_resized(path, res, interpolation), None
    except ImageError as e:
        return None, str(e)


def build_cache(data_dir, df: pd.DataFrame, pre: dict, workers: int | None = None,
                root: Path | None = None, progress: bool = True) -> np.ndarray:
    """Decode + resize every image once into a (N,3,R,R) uint8 .npy (memory-mapped on re-use).

    Keyed by the data fingerprint and the geometry, so a changed file or size rebuilds it.
    """
    res = resize_size(pre)
    key = f"{fingerprint(data_dir, df)}-{res}-{pre['interpolation']}"
    root = Path(root) if root else cache_dir()
    path = root / f"images-{key}.npy"
    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape == (len(df), 3, res, res):
                return np.asarray(arr)
        except (OSError, ValueError):
            pass  # corrupt cache: rebuild
    paths = resolve_paths(data_dir, df)
    arr = np.empty((len(paths), 3, res, res), dtype=np.uint8)
    fn = partial(_decode_or_error, res=res, interpolation=pre["interpolation"])
    workers = workers or default_workers()
    bar = tqdm(total=len(paths), desc=f"caching {res}px", unit="img", disable=not progress, leave=False)
    errors = []
    if workers > 1 and len(paths) > 64:
        with worker_pool(workers) as ex:  # workers die with us, even on kill -9
            results = ex.map(fn, paths, chunksize=16)
            for i, (a, err) in enumerate(results):
                arr[i] = a if a is not None else 0
                if err:
                    errors.append(err)
                bar.update()
    else:
        for i, p in enumerate(paths):
            a, err = fn(p)
            arr[i] = a if a is not None else 0
            if err:
                errors.append(err)
            bar.update()
    bar.close()
    if errors:
        raise UserError(f"{len(errors)} unreadable images (run `pokemon-classifier annotate` to drop them): "
                        + "; ".join(errors[:5]))
    atomic_save_npy(path, arr)
    return arr


# ---------------------------------------------------------------- inference inputs (predict, calibrate, openset)

def to_tensor(item, transform) -> torch.Tensor:
    """Path, bytes, PIL image or HxWx3 uint8 array -> transform(RGB image); ImageError when unusable."""
    if isinstance(item, np.ndarray):
        from PIL import Image

        if item.ndim == 2:
            item = np.stack([item] * 3, -1)
        if item.ndim != 3 or item.shape[2] not in (3, 4):
            raise ImageError(f"<array>: expected HxWx3 RGB array, got shape {item.shape}")
        item = Image.fromarray(item.astype(np.uint8))
    return transform(load_image(item))


def readable_batches(items, preprocessing: dict, errors: dict, batch_size: int = 64, workers: int | None = None,
                     progress: bool = False, desc: str = "predicting", threads: int | None = None):
    """(row indices, preprocessed batch) of the readable items, decoded by DataLoader workers (one
    for long lists); each unreadable row's '<file>: <reason>' goes into `errors` instead.

    Without worker processes the pictures are decoded by `threads` threads (default: decode_threads),
    the next batch while the caller runs the model on this one: PIL's decoding and
    resizing and ONNX Runtime release the GIL, so a batch of 32 no longer waits on 32 decodes done
    one after another. Same tensors, same order as decoding serially."""
    from torch.utils.data import DataLoader

    items = list(items)
    ds = _ItemDataset(items, eval_transform(preprocessing), int(preprocessing["size"]))
    paths = bool(items) and isinstance(items[0], (str, Path))
    workers = (1 if paths and len(ds) > batch_size else 0) if workers is None else workers
    threads = decode_threads(items) if threads is None else threads
    if workers == 0 and threads > 1:
        batches = _threaded_batches(ds, batch_size, threads)
    else:
        batches = DataLoader(ds, batch_size=batch_size, num_workers=workers)
    for x, idx, err in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        ok = torch.tensor([e == "" for e in err], dtype=torch.bool)
        errors.update((i, e) for i, e in zip(idx.tolist(), err) if e)
        if ok.any():
            yield idx[ok].numpy(), x[ok]


def decode_threads(items) -> int:
    """Decoding threads for `items`: 1 for a single item or for PIL images (a caller's image object
    is not ours to read from several threads), and 1 on machines with under 4 cores: on the 2-core
    machines of docs/speed.md (shared) two decoding threads made fp32 batches 6-16% slower and int8
    ones 2-4% faster, so no gain there; else half the cores, at most 4."""
    from PIL import Image

    cores = os.cpu_count() or 1
    if len(items) < 2 or cores < 4 or any(isinstance(i, Image.Image) for i in items):
        return 1
    return min(4, cores // 2)


def _threaded_batches(ds, batch_size: int, threads: int):
    """DataLoader's (x, idx, errors) batches, decoded by a thread pool one batch ahead."""
    from concurrent.futures import ThreadPoolExecutor

    starts = range(0, len(ds), batch_size)
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as ex:
        def submit(start):
            return [ex.submit(ds.__getitem__, i) for i in range(start, min(start + batch_size, len(ds)))]

        pending = submit(starts[0]) if len(starts) else None
        for k in range(len(starts)):
            rows = [f.result() for f in pending]
            pending = submit(starts[k + 1]) if k + 1 < len(starts) else None
            yield (torch.stack([r[0] for r in rows]), torch.tensor([r[1] for r in rows]), [r[2] for r in rows])


class _ItemDataset(Dataset):
    """(tensor, index, error): an unreadable image yields zeros and its message instead of an exception."""

    def __init__(self, paths, transform, size: int):
        self.paths, self.transform, self.size = paths, transform, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return to_tensor(self.paths[i], self.transform), i, ""
        except ImageError as e:
            return torch.zeros(3, self.size, self.size), i, str(e)
