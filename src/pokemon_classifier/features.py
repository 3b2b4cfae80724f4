"""Penultimate-layer features of a backbone, cached on disk under the backbone and the data's
fingerprint (data.fingerprint: names, labels, sizes, mtimes); used by `clean` and dedup's embedding pass.

    feats = extract_features(data_dir, df)                  # ImageNet efficientnet_lite0, offline weights
    feats = extract_features(data_dir, df, weights="best.pt")  # or a trained checkpoint's backbone
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from pokemon_classifier.data import build_cache, fingerprint
from pokemon_classifier.fileio import atomic_save_npy, sha256_file
from pokemon_classifier.models import LITE, build_model, load_checkpoint, preprocessing
from pokemon_classifier.presets import eval_tensor_transform
from pokemon_classifier.runtime import cache_dir


def _embedder(model, arch: str):
    if arch in LITE:
        return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)

    def mobilenet(x):
        m = getattr(model, "model", model)  # original-format wrapper
        return m.classifier[:-1](torch.flatten(m.avgpool(m.features(x)), 1))

    return mobilenet


@torch.inference_mode()
def extract_features(data_dir, df, weights=None, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    if weights:
        model, meta = load_checkpoint(weights)
        arch, pre, tag = meta["arch"], meta["preprocessing"], sha256_file(weights)[:12]
    else:
        arch, pre, tag = "efficientnet_lite0", preprocessing("efficientnet_lite0"), "imagenet-lite0"
        model = build_model(arch, num_classes=1000, pretrained=True)
    key = f"features-{tag}-{fingerprint(data_dir, df)}.npy"
    path = cache_dir() / key
    if path.is_file():
        return np.load(path)
    model = model.eval().to(memory_format=torch.channels_last)
    embed = _embedder(model, arch)
    images = build_cache(data_dir, df, pre, progress=progress)
    tf = eval_tensor_transform(pre)
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="features", unit="batch", disable=not progress, leave=False):
        x = torch.stack([tf(torch.from_numpy(np.array(a))) for a in images[start:start + batch_size]])
        out.append(embed(x.contiguous(memory_format=torch.channels_last)).float().numpy())
    feats = np.concatenate(out).astype(np.float32)
    atomic_save_npy(path, feats)
    return feats
