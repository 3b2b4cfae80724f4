"""Why this answer: a Grad-CAM heat map of what drove the top class, with its peak in the picture's pixels.

    pokemon-classifier predict photo.jpg --explain out/   # writes out/photo.explain.png, JSON gains "explain"

Python:
    ex = Explainer.load("best.pt")
    ex.explain("pikachu.jpg")  # {'peak': [x, y], 'class_index': 24, 'heat': HxW array, 'image': PIL}

Grad-CAM (Selvaraju et al. 2017) on the last convolutional stage: the stage's channels weighted by the
mean gradient of the top class's logit, summed, ReLU. For the shipped EfficientNet-Lite0 (a linear head
on the mean of that stage) it equals the class activation map, so one backward pass gives the exact
per-cell evidence. Only the torch backend computes it: an ONNX graph has no gradients.

Coordinates: the model sees the picture resized (shorter side to resize_size) and centre-cropped
(presets.eval_transform); `to_original` maps a point of that crop back to the **upright** picture (EXIF
orientation applied, as viewers and browsers show it and as load_image returns it). The part of the
picture outside the centre crop is not seen by the model and stays dark in the overlay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from pokemon_classifier.errors import UserError
from pokemon_classifier.images import load_image
from pokemon_classifier.presets import eval_transform, resize_size

OVERLAY_MAX_SIDE = 1024  # the PNG is for looking at: a 24-megapixel photo is drawn at this long side


def crop_geometry(width: int, height: int, pre: dict) -> tuple[float, float, int, int, int]:
    """(x scale, y scale, crop left, crop top, crop size) of eval_transform on a width x height picture:
    a point (u, v) of the model's input lies at ((u + left) * sx, (v + top) * sy) of the picture.
    The sizes follow torchvision's Resize(int) (longer side truncated) and CenterCrop (offsets rounded)."""
    r, size = resize_size(pre), int(pre["size"])
    if width <= height:
        rw, rh = r, int(r * height / width)
    else:
        rw, rh = int(r * width / height), r
    left, top = int(round((rw - size) / 2.0)), int(round((rh - size) / 2.0))
    return width / rw, height / rh, left, top, size


def to_original(u: float, v: float, width: int, height: int, pre: dict) -> tuple[int, int]:
    """Pixel (u, v) of the model's input -> the pixel of the upright width x height picture it came from."""
    sx, sy, left, top, _ = crop_geometry(width, height, pre)
    x = (u + 0.5 + left) * sx - 0.5
    y = (v + 0.5 + top) * sy - 0.5
    return int(np.clip(round(x), 0, width - 1)), int(np.clip(round(y), 0, height - 1))


def crop_box(width: int, height: int, pre: dict) -> tuple[float, float, float, float]:
    """The part of the picture the model sees, (x0, y0, x1, y1) in the picture's pixels."""
    sx, sy, left, top, size = crop_geometry(width, height, pre)
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def target_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The last convolutional stage: timm EfficientNet's bn2 (conv_head + BN + activation), torchvision
    MobileNetV3's features[-1]."""
    m = getattr(model, "model", model)  # the original format's 1000-way wrapper
    if hasattr(m, "conv_head") and hasattr(m, "bn2"):
        return m.bn2
    if hasattr(m, "features"):
        return m.features[-1]
    raise UserError(f"{type(m).__name__}: no known last convolutional stage to explain")


class Explainer:
    """Grad-CAM for a checkpoint's torch model."""

    def __init__(self, model: torch.nn.Module, meta: dict, device="cpu"):
        self.model, self.meta, self.device = model.eval(), meta, device
        self.pre = meta["preprocessing"]
        self.transform = eval_transform(self.pre)
        self.layer = target_layer(model)

    @classmethod
    def load(cls, path=None, device: str = "cpu") -> "Explainer":
        from pokemon_classifier.models import load_checkpoint, resolve_weights

        path = resolve_weights(path)
        if Path(path).suffix == ".onnx":
            raise UserError(f"{path}: explanations need the torch checkpoint (.pt); an ONNX graph has no gradients")
        model, meta = load_checkpoint(path, device)
        return cls(model, meta, device)

    def cam(self, x: torch.Tensor, class_index: int | None = None) -> tuple[np.ndarray, int]:
        """x (1,3,S,S) preprocessed -> (heat map (S,S) in 0..1 over the model's input, explained class index:
        the top class unless given)."""
        acts = {}

        def keep(_module, _inputs, out):
            out.retain_grad()
            acts["a"] = out

        handle = self.layer.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                logits = self.model(x.to(self.device).requires_grad_(True))
                c = int(logits[0].argmax()) if class_index is None else int(class_index)
                logits[0, c].backward()
        finally:
            handle.remove()
        a, g = acts["a"].detach(), acts["a"].grad.detach()
        heat = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
        heat = F.interpolate(heat, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
        top = float(heat.max())
        return (heat / top if top > 0 else heat).cpu().numpy(), c

    def explain(self, item, class_index: int | None = None) -> dict:
        """Path, bytes or PIL image -> {'peak': [x, y] in the upright picture's pixels, 'class_index',
        'heat' (S,S) over the model's input, 'image' the upright picture}."""
        img = load_image(item)
        heat, c = self.cam(self.transform(img)[None], class_index)
        v, u = np.unravel_index(int(np.argmax(heat)), heat.shape)
        return {"peak": list(to_original(u, v, *img.size, self.pre)), "class_index": c, "heat": heat, "image": img}


def overlay(img: Image.Image, heat: np.ndarray, pre: dict, peak=None, alpha: float = 0.5,
            max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
    """The picture with the heat map (over the centre crop the model saw) blended in, a ring at `peak`;
    drawn at most `max_side` px on the long side."""
    from matplotlib import colormaps

    w, h = img.size
    k = min(1.0, max_side / max(w, h))
    out = img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.BILINEAR) if k < 1 else img.copy()
    x0, y0, x1, y1 = (round(c * k) for c in crop_box(w, h, pre))
    full = np.zeros((out.height, out.width), dtype=np.float32)
    cw, ch = max(1, x1 - x0), max(1, y1 - y0)
    patch = np.asarray(Image.fromarray(heat.astype(np.float32), "F").resize((cw, ch), Image.Resampling.BILINEAR))
    # the crop can reach a pixel past the picture's edge (rounding): clip the patch to the picture
    xa, ya = max(0, x0), max(0, y0)
    xb, yb = min(out.width, x0 + cw), min(out.height, y0 + ch)
    full[ya:yb, xa:xb] = patch[ya - y0:yb - y0, xa - x0:xb - x0]
    colour = colormaps["jet"](np.clip(full, 0, 1))[..., :3] * 255
    base = np.asarray(out, dtype=np.float32)
    seen = np.zeros_like(full, dtype=bool)
    seen[ya:yb, xa:xb] = True
    mixed = np.where(seen[..., None], base * (1 - alpha) + colour * alpha, base * 0.35)  # unseen: dimmed
    out = Image.fromarray(mixed.clip(0, 255).astype(np.uint8))
    if peak is not None:
        d = ImageDraw.Draw(out)
        px, py, r = peak[0] * k, peak[1] * k, max(4, round(max(out.size) / 40))
        d.ellipse((px - r, py - r, px + r, py + r), outline=(255, 255, 255), width=max(2, r // 3))
    return out


def png_path(out_dir, source) -> Path:
    """out_dir/<stem>.explain.png for a picture path (bytes or arrays: 'picture')."""
    stem = Path(str(source)).stem if isinstance(source, (str, Path)) else "picture"
    return Path(out_dir) / f"{stem}.explain.png"


def write_explanation(explainer: Explainer, item, out_dir) -> dict:
    """Explain one picture and write its overlay: {'peak': [x, y], 'png': '<path>'} (what predict's JSON
    gains). The PNG is written atomically."""
    from pokemon_classifier.fileio import atomic_open

    ex = explainer.explain(item)
    path = png_path(out_dir, item)
    with atomic_open(path, "wb") as f:
        overlay(ex["image"], ex["heat"], explainer.pre, ex["peak"]).save(f, format="PNG")
    return {"peak": ex["peak"], "png": str(path)}
