"""Where the work runs: device choice, distributed set-up, worker counts and the cache folder.

One place for what train, evaluate, calibrate, predict and serve all need, so `--device` means the
same everywhere. torch is imported inside the functions that need it, so that a command that needs
only the worker counts or the cache folder (annotate) does not pay for it.
"""

from __future__ import annotations

import os
from pathlib import Path

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps (auto: the first GPU, else mps, else cpu)"


def pick_device(name: str = "auto", local_rank: int = 0, flag: str = "--device"):
    """torch.device for `auto|cpu|cuda|cuda:N|mps`; a device this machine lacks, or a name torch does
    not know, is a UserError naming the flag (one line, not a traceback deep in a model's .to())."""
    import torch

    from pokemon_classifier.errors import UserError

    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag} {name}: not a device (choose {DEVICE_HELP})") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{flag} {name}: not a device (choose {DEVICE_HELP})")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{flag} {name}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        if dev.index >= torch.cuda.device_count():
            raise UserError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"{flag} {name}: MPS is not available on this machine")
    return dev


def init_distributed(device_type: str) -> tuple[int, int, int]:
    """(rank, world, local_rank); a process group only when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return dist.get_rank(), world, local_rank()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def all_sum(values: list[float], device) -> list[float]:
    """Sum over the processes of a distributed run (the values themselves otherwise)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def default_workers() -> int:
    """Processes for decoding and hashing images (CPU-bound, one file each)."""
    return max(1, min(8, os.cpu_count() or 1))


def loader_workers() -> int:
    """DataLoader workers for training: none on a 2-core machine, where they only compete with the
    training threads; else half the cores, at most 8."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores // 2)


def cache_dir() -> Path:
    """Decoded images, hashes and features, keyed by content ($POKEMON_CLASSIFIER_CACHE overrides)."""
    return Path(os.environ.get("POKEMON_CLASSIFIER_CACHE", Path.home() / ".cache" / "pokemon-classifier"))


# ---------------------------------------------------------------- argparse `type=` checks
# One set of number checks for every command, so `--batch-size 0`, `--lr nan` or `--fps inf` are a
# one-line error at parse time naming the flag, never a traceback from deep inside torch.

def _number(kind, value: str, ok, expected: str):
    import argparse
    import math

    try:
        x = kind(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{value!r} is not {expected}") from None
    if isinstance(x, float) and not math.isfinite(x) or not ok(x):
        raise argparse.ArgumentTypeError(f"{value!r} is not {expected}")
    return x


def positive_int(value: str) -> int:
    return _number(int, value, lambda x: x >= 1, "a whole number of at least 1")


def nonnegative_int(value: str) -> int:
    return _number(int, value, lambda x: x >= 0, "a whole number of at least 0")


def positive_float(value: str) -> float:
    return _number(float, value, lambda x: x > 0, "a finite number above 0")


def nonnegative_float(value: str) -> float:
    return _number(float, value, lambda x: x >= 0, "a finite number of at least 0")


def finite_float(value: str) -> float:
    return _number(float, value, lambda x: True, "a finite number")


def fraction(value: str) -> float:
    return _number(float, value, lambda x: 0 <= x <= 1, "a number from 0 to 1")


def machine() -> str:
    """One line describing this machine and the libraries that set its speed, printed (and recorded)
    with every speed figure: benchmarks/ and the int8 gate."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")
