"""Transform presets (torchvision references style).

Training works on uint8 CHW tensors decoded and resized once into a cache (data.py), so
augmentation is cheap; prediction goes from a PIL image through the same geometry.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

AUGMENTS = ("none", "light", "strong")


def interp(name: str) -> InterpolationMode:
    return InterpolationMode.BICUBIC if name == "bicubic" else InterpolationMode.BILINEAR


def resize_size(pre: dict) -> int:
    """Shorter side before the centre crop (timm's crop_pct convention)."""
    return int(round(pre["size"] / pre.get("crop_pct", 0.875)))


def train_transform(pre: dict, augment: str = "light") -> T.Compose:
    """uint8 tensor (3,R,R) -> normalised float tensor (3,size,size)."""
    size, mode = pre["size"], interp(pre["interpolation"])
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}")
    if augment == "none":
        ops = [T.CenterCrop(size)]
    else:
        scale = (0.35, 1.0) if augment == "light" else (0.2, 1.0)
        ops = [T.RandomResizedCrop(size, scale=scale, interpolation=mode, antialias=True),
               T.RandomHorizontalFlip()]
        if augment == "light":
            ops.append(T.ColorJitter(0.2, 0.2, 0.2))
        else:
            ops += [T.TrivialAugmentWide(interpolation=mode), T.RandomGrayscale(0.05)]
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(pre["mean"], pre["std"])]
    if augment == "strong":
        ops.append(T.RandomErasing(0.25))
    return T.Compose(ops)


def eval_tensor_transform(pre: dict) -> T.Compose:
    """uint8 tensor already resized to resize_size(pre) -> centre crop -> normalised float."""
    return T.Compose([T.CenterCrop(pre["size"]), T.ToDtype(torch.float32, scale=True),
                      T.Normalize(pre["mean"], pre["std"])])


def eval_transform(pre: dict) -> T.Compose:
    """PIL RGB image -> normalised float tensor; same geometry as the training cache + centre crop."""
    return T.Compose([T.PILToTensor(), T.Resize(resize_size(pre), interpolation=interp(pre["interpolation"]), antialias=True),
                      T.CenterCrop(pre["size"]), T.ToDtype(torch.float32, scale=True),
                      T.Normalize(pre["mean"], pre["std"])])
