"""Transform presets (torchvision references style).

Training works on uint8 CHW tensors decoded and resized once into a cache (data.py), so
augmentation is cheap; prediction goes from a PIL image through the same geometry.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

AUGMENTS = ("none", "light", "style", "retro", "strong")


class LowRes(torch.nn.Module):
    """Shrink to a random 24..64 px and blow back up (nearest or bilinear): looks like a game sprite or
    a thumbnail, so the model stops relying on detail that sprites and icons do not have."""

    def __init__(self, p: float = 0.25, low: int = 24, high: int = 64):
        super().__init__()
        self.p, self.low, self.high = p, low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return x
        h, w = x.shape[-2:]
        s = int(torch.randint(self.low, self.high + 1, ()))
        small = T.functional.resize(x, [s, s], antialias=True)
        mode = InterpolationMode.NEAREST if torch.rand(()) < 0.5 else InterpolationMode.BILINEAR
        return T.functional.resize(small, [h, w], interpolation=mode, antialias=False)


class GameBoySprite(torch.nn.Module):
    """Turn a picture into something like a game sprite: 32..56 px, black outlines, and either 4 grey
    shades (Red/Green) or a few flat colours (Crystal), blown back up with the eval interpolation as
    the cache does to real sprites. The shared data has one sprite of each kind per class, so a
    class's test sprite is never seen in training: the style has to be learnt from other pictures."""

    SHADES = torch.tensor([0.0, 96.0, 176.0, 255.0])

    def __init__(self, p: float = 0.15, low: int = 32, high: int = 56, colour: float = 0.3,
                 interpolation: InterpolationMode = InterpolationMode.BICUBIC):
        super().__init__()
        self.p, self.low, self.high, self.colour, self.interpolation = p, low, high, colour, interpolation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return x
        h, w = x.shape[-2:]
        s = int(torch.randint(self.low, self.high + 1, ()))
        small = T.functional.resize(x[:3], [s, s], antialias=True)
        grey = T.functional.rgb_to_grayscale(small)[0].float()
        if torch.rand(()) < self.colour:
            out = small & 0xC0 | 0x20  # 4 levels per channel: flat colours
        else:
            # cut points at jittered quantiles of the picture's own greys, so every picture uses all
            # 4 shades the way sprites do (mostly light, dark shading)
            fg = grey[grey < 235]
            fg = fg if fg.numel() > 16 else grey.flatten()
            q = torch.tensor([0.15, 0.45, 0.8]) + (torch.rand(3) - 0.5) * 0.1
            cuts = torch.quantile(fg, q.clamp(0.01, 0.99))
            out = self.SHADES[torch.bucketize(grey, cuts)].to(torch.uint8).expand(3, s, s).clone()
        # outlines: the strongest ~12% of edges go black
        gx = torch.zeros_like(grey)
        gy = torch.zeros_like(grey)
        gx[:, 1:] = (grey[:, 1:] - grey[:, :-1]).abs()
        gy[1:, :] = (grey[1:, :] - grey[:-1, :]).abs()
        edge = torch.maximum(gx, gy)
        out = torch.where(edge > torch.quantile(edge, 0.88).clamp(min=24), 0, out)
        return T.functional.resize(out, [h, w], interpolation=self.interpolation, antialias=True)


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
        scale = (0.2, 1.0) if augment == "strong" else (0.35, 1.0)
        ops = [T.RandomResizedCrop(size, scale=scale, interpolation=mode, antialias=True),
               T.RandomHorizontalFlip()]
        if augment in ("light", "style", "retro"):
            ops.append(T.ColorJitter(0.2, 0.2, 0.2))
        if augment in ("style", "retro"):  # other picture styles: sprites, greyscale Game Boy art, flat colours
            ops += [LowRes(0.25), T.RandomGrayscale(0.15), T.RandomPosterize(4, p=0.1)]
        if augment == "retro":  # + whole Red/Green-style sprites
            ops.append(GameBoySprite(0.15, interpolation=mode))
        if augment == "strong":  # TrivialAugment's affine ops support only nearest/bilinear on tensors
            ops += [T.TrivialAugmentWide(interpolation=InterpolationMode.BILINEAR), T.RandomGrayscale(0.05)]
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(pre["mean"], pre["std"])]
    if augment == "strong":
        ops.append(T.RandomErasing(0.25))
    return T.Compose(ops)


class ScaleNormalize(torch.nn.Module):
    """uint8 (3,H,W) -> float32 (x / 255 - mean) / std: the numbers T.ToDtype(scale=True) + T.Normalize
    give, computed in numpy on the calling thread. One picture is too small to share across cores,
    and torch's intra-op threads fight the model's for them when the app preprocesses in several
    threads during a forward pass (on 2 busy cores this step took 55 ms instead of 1.4 ms)."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(-1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.numpy().astype(np.float32)
        a *= np.float32(1.0 / 255)  # as torchvision: times the float32 reciprocal
        a -= self.mean
        a /= self.std
        return torch.from_numpy(a)


def eval_tensor_transform(pre: dict) -> T.Compose:
    """uint8 tensor already resized to resize_size(pre) -> centre crop -> normalised float."""
    return T.Compose([T.CenterCrop(pre["size"]), T.ToDtype(torch.float32, scale=True),
                      T.Normalize(pre["mean"], pre["std"])])


def eval_transform(pre: dict) -> T.Compose:
    """PIL RGB image -> normalised float tensor; same geometry as the training cache + centre crop."""
    return T.Compose([T.PILToTensor(), T.Resize(resize_size(pre), interpolation=interp(pre["interpolation"]), antialias=True),
                      T.CenterCrop(pre["size"]), ScaleNormalize(pre["mean"], pre["std"])])
