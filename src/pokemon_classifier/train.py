"""Train a Pokemon classifier: the original recipe by default, resumable and torchrun-ready.

    pokemon-classifier train --data data/ --out runs/mnv3                      # original recipe
    pokemon-classifier train --data data/ --out runs/lite0 --arch efficientnet_lite0 --pretrained \\
        --img-size 192 --freeze 2 --epochs 12
    pokemon-classifier train --config configs/shipped.yaml --data data/ --out runs/shipped
    pokemon-classifier train --resume runs/lite0/last.pt                       # after a crash
    pokemon-classifier train --config configs/shipped.yaml --data data/ --out runs/oe --init best.pt \
        --lr 1e-4 --epochs 3 --negatives negatives/                          # fine-tune with outlier exposure
    torchrun --nproc_per_node=2 -m pokemon_classifier train --data data/ --out runs/ddp

Recipe defaults (the original project's): mobilenet_v3_large with a 151-way head, cross-entropy,
Adam lr 1e-3, ExponentialLR(gamma=0.9) stepped per epoch, 25 epochs, batch 64. best.pt holds a
real copy of the weights of the epoch with the lowest validation loss.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from pokemon_classifier import __version__, pokedex
from pokemon_classifier.annotations import read_annotations
from pokemon_classifier.data import TensorDataset8, build_cache, fingerprint
from pokemon_classifier.errors import UserError
from pokemon_classifier.fileio import (atomic_savefig, atomic_torch_save, atomic_write_csv, out_dir, remove_stale_temps,
                                       subplots)
from pokemon_classifier.models import (ARCHS, build_model, freeze_stages, preprocessing, read_checkpoint,
                                       set_frozen_bn_eval)
from pokemon_classifier.presets import AUGMENTS, eval_tensor_transform, train_transform
from pokemon_classifier.runtime import DEVICE_HELP, all_sum, init_distributed, loader_workers, local_rank, pick_device  # noqa: F401
from pokemon_classifier.runtime import fraction, nonnegative_int, positive_float, positive_int
from pokemon_classifier.splits import SPLITS_CSV, make_splits, read_splits, split_kind


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", type=Path, help="data folder (annotations.csv + images/)")
    g.add_argument("--splits", type=Path, help="splits.csv (default: DATA/splits.csv, else made group-aware into OUT)")
    g.add_argument("--augment", choices=AUGMENTS, default="light")
    g.add_argument("--img-size", type=positive_int, default=None, help="training/eval crop size (default: the arch's, 224)")
    g.add_argument("--workers", type=nonnegative_int, default=None, help="DataLoader workers (default: sized to the machine)")
    g.add_argument("--config", type=Path, help="YAML file whose keys set these options (flags win)")
    g.add_argument("--negatives", type=Path, help="outlier exposure: also train on the tuning half of this folder of "
                   "pictures that are not Gen-1 Pokemon, pushed towards a uniform answer (the reporting half "
                   "`evaluate --negatives` uses is never read)")
    g.add_argument("--oe-weight", type=positive_float, default=0.5, help="weight of the outlier-exposure loss")
    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=list(ARCHS), default="mobilenet_v3_large")
    g.add_argument("--pretrained", action="store_true", help="start from ImageNet weights")
    g.add_argument("--weights-file", help="local ImageNet state_dict for --arch (implies --pretrained)")
    g.add_argument("--freeze", type=nonnegative_int, default=0, help="freeze the stem and the first N stages")
    g.add_argument("--init", type=Path, metavar="CKPT",
                   help="fine-tune: start from the weights of this pokemon-classifier checkpoint (same --arch and "
                        "classes; only its weights are read, the recipe comes from these options)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, default=None,
                   help="default 25; with --resume, a larger number extends a run (the schedule continues)")
    g.add_argument("--batch-size", type=positive_int, default=64, help="per process")
    g.add_argument("--micro-batch", type=positive_int, default=None,
                   help="split each batch into chunks of this size and accumulate gradients: the same update "
                        "(BatchNorm statistics come from each chunk), ~2x faster on CPU where big activations "
                        "fall out of cache (default: 16 on CPU, off on GPU)")
    g.add_argument("--lr", type=positive_float, default=1e-3)
    g.add_argument("--gamma", type=positive_float, default=0.9, help="ExponentialLR decay per epoch")
    g.add_argument("--label-smoothing", type=fraction, default=0.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--init-seed", type=int, default=None,
                   help="seed of the new head's initialisation (default: --seed); soup ingredients should share it "
                        "and differ in --seed (data order, augmentation)")
    g = p.add_argument_group("run")
    g.add_argument("--out", type=out_dir, help="output folder (best.pt, last.pt, metrics.csv, curves.png)")
    g.add_argument("--resume", type=Path, help="continue from OUT/last.pt at the next epoch")
    g.add_argument("--device", default="auto", help=DEVICE_HELP)
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    g.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: all cores)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    g.add_argument("--max-batches", type=int, default=None, help=argparse.SUPPRESS)  # tests: stop an epoch early


# ---------------------------------------------------------------- one epoch

def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Every epoch's randomness depends only on (seed, epoch, rank): resume == uninterrupted."""
    s = seed * 100_003 + epoch * 1_009 + rank
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


class OutlierExposureLoss(nn.Module):
    """Cross-entropy on labelled images plus, for label -1 (a picture that is not a Gen-1 Pokemon),
    `weight` x the KL divergence of the prediction from uniform (Hendrycks et al. 2019, "Deep anomaly
    detection with outlier exposure"); the mean over the batch. Without -1 labels it is plain CE."""

    def __init__(self, label_smoothing: float = 0.0, weight: float = 0.5):
        super().__init__()
        self.label_smoothing, self.weight = label_smoothing, weight

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        known = y >= 0
        loss = nn.functional.cross_entropy(out[known], y[known], label_smoothing=self.label_smoothing,
                                           reduction="sum") if known.any() else out.sum() * 0
        if not known.all():
            logp = torch.log_softmax(out[~known].float(), dim=1)
            loss = loss + self.weight * (-logp.mean(1) - np.log(out.shape[1])).sum()
        return loss / max(y.numel(), 1)


def negatives_for_training(folder, pre: dict, n_train: int, share: float = 0.08,
                           progress: bool = True) -> tuple[np.ndarray, dict]:
    """The tuning half of a negatives folder decoded like the training cache, repeated so negatives are
    about `share` of the samples of an epoch; (uint8 array, what to record in the checkpoint)."""
    from pokemon_classifier.data import decode_resized
    from pokemon_classifier.openset import read_negatives
    from pokemon_classifier.presets import resize_size

    table = read_negatives(folder)
    tune = table[table["half"] == "tune"]
    if tune.empty:
        raise UserError(f"{folder}: no pictures in the tuning half of the negatives")
    res, arrays = resize_size(pre), []
    for path in tqdm(tune["path"], desc="negatives", unit="img", leave=False, disable=not progress):
        try:
            arrays.append(decode_resized(path, res, pre["interpolation"]))
        except Exception as e:  # noqa: BLE001 - one unreadable negative is skipped, and said
            print(f"warning: {path}: skipped ({' '.join(str(e).split())[:120] or type(e).__name__})")
    if not arrays:
        raise UserError(f"{folder}: none of the tuning negatives could be read")
    repeat = max(1, round(share * n_train / len(arrays)))
    info = {"folder": str(folder), "n": len(arrays), "repeat": repeat,
            "kinds": {str(k): int(v) for k, v in tune["kind"].value_counts().items()}}
    return np.concatenate([np.stack(arrays)] * repeat), info


@dataclass
class EpochOptions:
    """How train_one_epoch runs: precision, memory layout, progress bar, and how much of the loader."""
    amp: bool = False  # bfloat16 autocast
    channels_last: bool = False
    progress: bool = True
    max_batches: int | None = None  # stop after this many batches (benchmarks)
    desc: str = "train"  # the progress bar's label
    micro_batch: int | None = None  # split each batch into chunks of this size (gradient accumulation)


def train_one_epoch(model, loader, criterion, optimizer, device, opts: EpochOptions | None = None):
    opts = opts or EpochOptions()
    amp, channels_last, max_batches, micro_batch = opts.amp, opts.channels_last, opts.max_batches, opts.micro_batch
    model.train()
    set_frozen_bn_eval(model)
    tot_loss = correct = n = 0.0
    t0 = time.perf_counter()
    # islice: stop before loading a batch that would not be trained on
    batches = loader if max_batches is None else itertools.islice(loader, max_batches)
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = tqdm(batches, total=total, desc=opts.desc, unit="batch", disable=not opts.progress, leave=False)
    for x, y in bar:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        b = y.numel()
        optimizer.zero_grad(set_to_none=True)
        step = micro_batch or b
        for s in range(0, b, step):  # gradient accumulation: the mean loss over the whole batch
            xs, ys = x[s:s + step], y[s:s + step]
            # DDP all-reduces gradients in backward(): only once per batch, on its last chunk
            last = s + step >= b
            with (contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = model(xs)
                    loss = criterion(out, ys)
                (loss * (ys.numel() / b)).backward()
            tot_loss += loss.item() * ys.numel()
            correct += (out.argmax(1) == ys).sum().item()
        optimizer.step()
        n += b
        bar.set_postfix(loss=f"{tot_loss / max(n, 1):.3f}", acc=f"{correct / max(n, 1):.3f}")
    secs = time.perf_counter() - t0
    tot_loss, correct, n = all_sum([tot_loss, correct, n], device)
    return {"train_loss": tot_loss / max(n, 1), "train_acc": correct / max(n, 1), "train_seconds": secs,
            "img_per_s": n / max(secs, 1e-9)}


@torch.inference_mode()
def evaluate(model, loader, criterion, device, amp: bool, channels_last: bool, progress: bool = True):
    model.eval()
    tot_loss = correct = n = 0.0
    for x, y in tqdm(loader, desc="val", unit="batch", disable=not progress, leave=False):
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        tot_loss += criterion(out.float(), y).item() * y.numel()
        correct += (out.argmax(1) == y).sum().item()
        n += y.numel()
    tot_loss, correct, n = all_sum([tot_loss, correct, n], device)
    return {"val_loss": tot_loss / max(n, 1), "val_acc": correct / max(n, 1), "val_n": int(n)}


# ---------------------------------------------------------------- checkpoints, metrics, plots

def library_versions() -> dict:
    import torchvision

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading refuses
    v = {"pokemon_classifier": __version__, "torch": str(torch.__version__),
         "torchvision": str(torchvision.__version__), "python": platform.python_version()}
    try:
        import timm

        v["timm"] = str(timm.__version__)
    except ImportError:
        pass
    return v


def _plain(obj):
    """args -> only str/int/float/bool/None/list (weights_only-loadable, JSON-able)."""
    return json.loads(json.dumps(obj, default=str))


def plot_curves(metrics: pd.DataFrame, path: Path) -> None:
    fig, (a, b) = subplots(1, 2, figsize=(10, 3.8))
    a.plot(metrics["epoch"], metrics["train_loss"], "o-", label="train")
    a.plot(metrics["epoch"], metrics["val_loss"], "o-", label="val")
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy"), a.legend(), a.set_title("loss")
    b.plot(metrics["epoch"], metrics["train_acc"], "o-", label="train")
    b.plot(metrics["epoch"], metrics["val_acc"], "o-", label="val")
    best = metrics.loc[metrics["val_loss"].idxmin()]
    b.axvline(best["epoch"], color="grey", ls="--", lw=0.8, label=f"best (epoch {int(best['epoch'])})")
    b.set_xlabel("epoch"), b.set_ylabel("top-1"), b.legend(), b.set_title("accuracy")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=90)



# ---------------------------------------------------------------- options

PATH_OPTIONS = ("data", "out", "splits", "config", "resume", "negatives", "init")


def config_defaults(path, parser: argparse.ArgumentParser) -> dict:
    """The YAML file's keys as parser defaults (timm's way): applied before parsing, so any flag on
    the command line wins, even one that equals its default."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({(str(e).splitlines() or ['?'])[0]})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (expected a YAML config)") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected `option: value` lines")
    actions = {a.dest: a for a in parser._actions}
    out = {}
    for k, v in cfg.items():
        k = str(k).replace("-", "_")
        if k not in actions or k in ("help", "config"):
            raise UserError(f"{path}: unknown option {k!r}")
        if actions[k].choices is not None and v not in actions[k].choices:
            raise UserError(f"{path}: {k}: {v!r} is not one of {', '.join(map(str, actions[k].choices))}")
        if v is not None and callable(actions[k].type) and actions[k].type is not Path:
            try:  # the flag's own check (positive, finite, a folder...): YAML values get no less
                v = actions[k].type(str(v))
            except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
                raise UserError(f"{path}: {k}: {e}") from None
        out[k] = Path(v) if k in PATH_OPTIONS and v else v
    return out


# ---------------------------------------------------------------- checkpoints

TRAIN_OUTPUTS = ("best.pt", "last.pt", "metrics.csv", "curves.png", SPLITS_CSV)  # what a run writes into --out
CHECKPOINT_VERSION = 2  # 2: "epoch" counts epochs completed in best.pt and last.pt alike; full rng state


def epochs_completed(ck: dict) -> int:
    """Epochs a checkpoint had trained. Version-1 last.pt files stored the 0-based index of the epoch
    just finished (their best.pt was already 1-based)."""
    epoch = int(ck["epoch"])
    return epoch + 1 if ck.get("version", 1) < 2 and "optimizer" in ck else epoch


def rng_state() -> dict:
    """Every generator an epoch draws from, in types that load with weights_only=True."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
             "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_gauss": float(gauss),
             "python": [int(version), list(internal), gauss_next]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() saved (version-1 files have the torch state and numpy's keys only)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(state.get("numpy_pos", 624)),
                         int(state.get("numpy_has_gauss", 0)), float(state.get("numpy_gauss", 0.0))))
    if "python" in state:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointSaver:
    """Writes best.pt (weights of the lowest validation loss, a real copy) and last.pt (everything a
    --resume needs) after each epoch; modelled on timm's CheckpointSaver. Only rank 0 writes."""

    def __init__(self, out: Path, model, optimizer, scheduler, meta: dict, write: bool = True,
                 best_loss: float = float("inf"), history: list | None = None):
        self.out, self.model, self.optimizer, self.scheduler = Path(out), model, optimizer, scheduler
        self.meta, self.write = meta, write
        self.best_loss, self.history = best_loss, list(history or [])

    def _ck(self, state, metrics: dict, epochs: int) -> dict:
        return {"version": CHECKPOINT_VERSION, "model": state, **self.meta, "metrics": metrics, "epoch": epochs}

    def update(self, metrics: dict) -> bool:
        """Record one finished epoch (metrics["epoch"] is 1-based); returns whether it is the new best."""
        self.history.append(metrics)
        epochs = int(metrics["epoch"])
        improved = metrics["val_loss"] < self.best_loss
        if improved:
            self.best_loss = metrics["val_loss"]
        if not self.write:
            return improved
        if improved:
            # a real copy: the original stored model.state_dict() by reference, so its "best" was the last epoch
            best = copy.deepcopy(self.model.state_dict())
            atomic_torch_save(self._ck(best, dict(metrics), epochs), self.out / "best.pt")
        last = self._ck(self.model.state_dict(), metrics, epochs)
        last.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                    best_val_loss=self.best_loss, history=self.history, rng=rng_state())
        atomic_torch_save(last, self.out / "last.pt")
        self.write_history()
        return improved

    def write_history(self) -> None:
        """metrics.csv and curves.png from the history; on --resume too, since a kill between last.pt and
        them leaves them an epoch behind."""
        if self.write and self.history:
            hist = pd.DataFrame(self.history)
            atomic_write_csv(self.out / "metrics.csv", hist)
            plot_curves(hist, self.out / "curves.png")


# ---------------------------------------------------------------- set-up

def load_resume(args) -> dict | None:
    """The last.pt of --resume, with the run's own recipe copied into `args` (only run-time options
    and a longer --epochs may change). Raises before any data is loaded when nothing is left to do."""
    if not args.resume:
        return None
    if not args.resume.is_file():
        raise UserError(f"--resume {args.resume}: file not found")
    if args.init:
        raise UserError(f"--init {args.init}: a resumed run continues from its last.pt; drop --init")
    ck = read_checkpoint(args.resume)
    if "optimizer" not in ck or not isinstance(ck.get("args"), dict):
        raise UserError(f"--resume {args.resume}: not a last.pt (no optimizer state); use OUT/last.pt")
    keep = {"resume", "device", "workers", "progress", "threads", "max_batches", "micro_batch"}
    if args.epochs is not None:
        keep.add("epochs")
    if args.out is None:  # the run goes on where its last.pt is now (the folder may have been moved)
        args.out = args.resume.parent
    keep.add("out")
    for k, v in ck["args"].items():
        if k not in keep:
            setattr(args, k, Path(v) if k in PATH_OPTIONS and v else v)
    done = epochs_completed(ck)
    if done >= (args.epochs or 25):
        raise UserError(f"--resume {args.resume}: the run already finished its {done} epochs; "
                        f"pass --epochs N (N > {done}) to train on")
    return ck


def prepare_splits(args, df: pd.DataFrame, rank: int) -> tuple[pd.DataFrame, Path]:
    """(img_name -> split, the file it came from): --splits, DATA/splits.csv, or a fresh group-aware split into OUT."""
    path = args.splits or (args.data / SPLITS_CSV)
    if path.is_file():
        return read_splits(path, df), path
    if args.splits:
        raise UserError(f"{args.splits}: splits file not found")
    out = args.out / SPLITS_CSV
    if rank == 0:
        from pokemon_classifier import dedup

        groups = dedup.find_groups(args.data, df, progress=args.progress)
        atomic_write_csv(out, make_splits(groups, seed=args.seed))
        print(f"no {path}: made a group-aware split into {out}")
    if dist.is_initialized():
        dist.barrier()
    return read_splits(out, df), out


@dataclass
class Loaders:
    """build_loaders' result: the two loaders and what the run says about them."""

    train: DataLoader
    val: DataLoader
    reseed: Callable[[int], None]  # call at each epoch: data order and worker seeds depend only on (seed, epoch)
    n_train: int
    n_val: int
    workers: int


def build_loaders(args, images, labels, split: np.ndarray, pre: dict, rank: int, world: int, device) -> Loaders:
    tr = np.flatnonzero(split == "train")
    va = np.flatnonzero(split == "val")
    if len(tr) == 0 or len(va) == 0:
        raise UserError(f"{args.data}: need train and val images (got {len(tr)} train, {len(va)} val)")
    train_ds = TensorDataset8(images[tr], labels[tr], train_transform(pre, args.augment))
    va_shard = va[rank::world]  # no padding: reduced sums are exact
    val_ds = TensorDataset8(images[va_shard], labels[va_shard], eval_tensor_transform(pre))
    workers = args.workers if args.workers is not None else loader_workers()
    if world > 1:
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    else:
        sampler = RandomSampler(train_ds, generator=torch.Generator())
    loader_gen = torch.Generator()
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler, num_workers=workers,
                              pin_memory=device.type == "cuda", drop_last=False, generator=loader_gen,
                              persistent_workers=False)
    val_loader = DataLoader(val_ds, batch_size=args.batch_size * 2, shuffle=False, num_workers=workers)

    def reseed(epoch: int) -> None:  # data order and worker seeds depend only on (seed, epoch)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(args.seed * 7919 + epoch)
        loader_gen.manual_seed(args.seed * 104_729 + epoch)

    return Loaders(train_loader, val_loader, reseed, len(tr), len(va), workers)


def check_args(args) -> None:
    if args.epochs is None:
        args.epochs = 25
    if not args.data:
        raise UserError("--data DATA is required (a folder with annotations.csv and images/)")
    if not args.out:
        raise UserError("--out OUT is required (where best.pt, last.pt and metrics go)")
    if not (args.epochs >= 1 and args.batch_size >= 1 and args.lr > 0 and np.isfinite(args.lr)):
        raise UserError("--epochs, --batch-size and --lr must be positive")
    if args.init and not args.resume:
        args.pretrained, args.weights_file = False, None  # the weights come from --init (recorded as such)
    if args.weights_file:
        args.pretrained = True
        if not args.resume:  # a resumed run starts from last.pt and never reads the file again
            # loaded once here so that a bad file is refused before minutes of hashing and caching
            build_model(args.arch, pretrained=True, weights_file=args.weights_file)


def init_weights(path, arch: str) -> dict:
    """The state_dict of --init CKPT, checked against the run's architecture and classes."""
    ck = read_checkpoint(path)
    if "model" not in ck or "arch" not in ck:
        raise UserError(f"--init {path}: not a pokemon-classifier checkpoint")
    if ck["arch"] != arch:
        raise UserError(f"--init {path}: its architecture is {ck['arch']}, this run trains {arch} (--arch)")
    if [int(i) for i in ck.get("class_ids", pokedex.IDS)] != list(pokedex.IDS):
        raise UserError(f"--init {path}: its classes are not the 151 Gen-1 Pokemon this run trains")
    return ck["model"]


# ---------------------------------------------------------------- main

@dataclass
class TrainingData:
    """The run's images, decoded once: the annotations joined with their split, and the negatives."""

    df: pd.DataFrame  # annotations + split (the data fingerprint is taken on it)
    splits_path: Path
    pre: dict  # the arch's preprocessing at --img-size
    images: np.ndarray  # (N,3,R,R) uint8, the negatives after the annotated images
    labels: np.ndarray  # class index, -1 for a negative
    split: np.ndarray  # train / val / test per row (negatives: train)
    oe: dict | None  # outlier exposure: how many negatives, how often repeated, their weight


def load_data(args, rank: int, world: int, progress: bool) -> TrainingData:
    df = read_annotations(args.data, purpose="train on")
    splits, splits_path = prepare_splits(args, df, rank)
    df = df.merge(splits, on="img_name", how="left")
    pre = preprocessing(args.arch, args.img_size)

    # decode + resize once (rank 0 builds the cache, the others reuse it)
    if rank == 0:
        images = build_cache(args.data, df, pre, progress=progress)
    if world > 1:
        dist.barrier()
        if rank != 0:
            images = build_cache(args.data, df, pre, progress=False)
    labels, split = df["pokemon_id"].to_numpy() - 1, df["split"].to_numpy()
    oe = None
    if args.negatives:  # outlier exposure: label -1, pushed to a uniform answer by the loss
        neg, oe = negatives_for_training(args.negatives, pre, int((split == "train").sum()), progress=progress)
        images = np.concatenate([images, neg])
        labels, split = np.r_[labels, np.full(len(neg), -1)], np.r_[split, np.full(len(neg), "train")]
        oe["weight"] = args.oe_weight
    return TrainingData(df, splits_path, pre, images, labels, split, oe)


def build_network(args, device, world: int, resume_ck: dict | None, init_sd: dict | None):
    """(model, the network to train: model or its DDP wrapper, parameters frozen) with the run's first weights."""
    torch.manual_seed(args.seed if args.init_seed is None else args.init_seed)
    model = build_model(args.arch, len(pokedex.IDS), pretrained=args.pretrained and not resume_ck,
                        weights_file=None if resume_ck else args.weights_file)  # check_args cleared both for --init
    if init_sd is not None:
        model.load_state_dict(init_sd)
    frozen = freeze_stages(model, args.arch, args.freeze)
    model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    return model, net, frozen


def run_meta(args, data: TrainingData, resume_ck: dict | None) -> dict:
    """What every checkpoint of the run carries besides the weights."""
    class_ids = list(pokedex.IDS)
    meta = {"arch": args.arch, "class_ids": class_ids, "names": [pokedex.name(i) for i in class_ids],
            "preprocessing": data.pre, "args": _plain(vars(args)), "data_fingerprint": fingerprint(args.data, data.df),
            "versions": library_versions(), "split": split_kind(data.splits_path), "split_file": str(data.splits_path)}
    if data.oe:
        meta["outlier_exposure"] = data.oe
    if resume_ck and "init" in resume_ck:  # where the run's first weights came from, as recorded then
        meta["init"] = resume_ck["init"]
    elif args.init:
        from pokemon_classifier.fileio import sha256_file

        meta["init"] = {"file": str(args.init), "sha256": sha256_file(args.init)}
    return meta


def restore(resume_ck: dict, model, optimizer, scheduler, saver: CheckpointSaver) -> int:
    """--resume: the weights, optimizer, schedule, random state and history of last.pt; returns the
    number of epochs it had completed."""
    model.load_state_dict(resume_ck["model"])
    optimizer.load_state_dict(resume_ck["optimizer"])
    scheduler.load_state_dict(resume_ck["scheduler"])
    if "rng" in resume_ck:
        set_rng_state(resume_ck["rng"])
    saver.best_loss = float(resume_ck.get("best_val_loss", float("inf")))
    saver.history = list(resume_ck.get("history", []))
    saver.write_history()
    return epochs_completed(resume_ck)


def main(args) -> int:
    resume_ck = load_resume(args)
    check_args(args)
    # --init's weights, read once and now: a bad file is refused before minutes of hashing and caching
    init_sd = init_weights(args.init, args.arch) if args.init and not resume_ck else None
    if args.threads:
        torch.set_num_threads(args.threads)

    device = pick_device(args.device, local_rank())
    rank, world, _ = init_distributed(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp = device.type == "cuda"
    progress = args.progress and rank == 0
    args.out.mkdir(parents=True, exist_ok=True)
    if rank == 0:  # temp files of a run killed mid-write (the real files are intact); never a user's
        remove_stale_temps(args.out, TRAIN_OUTPUTS, time.time())

    data = load_data(args, rank, world, progress)
    loaders = build_loaders(args, data.images, data.labels, data.split, data.pre, rank, world, device)
    model, net, frozen = build_network(args, device, world, resume_ck, init_sd)
    criterion = OutlierExposureLoss(args.label_smoothing, args.oe_weight)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.gamma)
    micro = args.micro_batch if args.micro_batch is not None else (16 if device.type == "cpu" else None)
    if micro is not None and micro <= 0:
        micro = None
    saver = CheckpointSaver(args.out, model, optimizer, scheduler, run_meta(args, data, resume_ck), write=rank == 0)
    start_epoch = restore(resume_ck, model, optimizer, scheduler, saver) if resume_ck else 0
    if rank == 0:
        if resume_ck:
            print(f"resumed from {args.resume} at epoch {start_epoch + 1}/{args.epochs}")
        n_par, oe = sum(p.numel() for p in model.parameters()), data.oe
        print(f"{args.arch} ({n_par / 1e6:.1f}M params, {frozen / 1e6:.2f}M frozen) on {device} x{world}; "
              f"{loaders.n_train} train / {loaders.n_val} val images at {data.pre['size']}px; augment {args.augment}; "
              f"{args.epochs} epochs, batch {args.batch_size}, workers {loaders.workers}"
              + (f"; outlier exposure: {oe['n']} negatives x{oe['repeat']}, weight {oe['weight']:g}" if oe else ""))

    for epoch in range(start_epoch, args.epochs):  # 0-based index; checkpoints count epochs completed
        seed_epoch(args.seed, epoch, rank)
        loaders.reseed(epoch)
        lr = optimizer.param_groups[0]["lr"]
        m = train_one_epoch(net, loaders.train, criterion, optimizer, device,
                            EpochOptions(amp, args.channels_last, progress, args.max_batches,
                                         desc=f"epoch {epoch + 1}/{args.epochs}", micro_batch=micro))
        m.update(evaluate(net, loaders.val, criterion, device, amp, args.channels_last, progress))
        scheduler.step()
        m = {"epoch": epoch + 1, "lr": lr, **m}
        improved = saver.update(m)
        if rank == 0:
            print(f"epoch {epoch + 1}/{args.epochs}: train loss {m['train_loss']:.3f} acc {m['train_acc']:.3f} | "
                  f"val loss {m['val_loss']:.3f} acc {m['val_acc']:.3f} | lr {lr:.2e} | "
                  f"{m['train_seconds']:.0f}s {m['img_per_s']:.1f} img/s" + (" *best*" if improved else ""),
                  flush=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0
