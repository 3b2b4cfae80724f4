"""The open-set score as torch modules: what predict, serve and the ONNX graph run.

Needs only torch and numpy, so that `export` and `predict` import it without the fitting code; the
ONNX cache key hashes this file (onnx_graph.graph_code), not the fitting, statistics or plots.
"""

from __future__ import annotations

import numpy as np
import torch

PARTS = ("knn", "oe", "msp")


class OpenSetHead(torch.nn.Module):
    """score(logits, features): higher = more like a Gen-1 Pokemon. Three parts, each z-scored on
    validation images, then summed with the weights stored beside them (WEIGHTS; 1 in older files):

    - `knn`: cosine similarity of the features to the nearest training image, in a PCA subspace of
      the training features (deep nearest neighbours, Sun et al. 2022; the bank is stored as float16);
    - `oe`: the margin of a logistic "Gen-1 Pokemon or not" head on the standardised features
      (penultimate + texture statistics, see WithFeatures),
      trained on training features against tuning negatives (outlier exposure at the head,
      Hendrycks et al. 2019);
    - `msp`: the top softmax probability after temperature scaling (Hendrycks & Gimpel 2017).

    Chosen by 2-fold cross-validation on the tuning negatives among max-softmax, energy,
    Mahalanobis, kNN and outlier-exposure scores and their sums (README, "Unknown"). A torch
    module, so that predict, serve and the ONNX graph compute the very same number.
    """

    def __init__(self, state: dict):
        super().__init__()
        self.parts = [p for p in PARTS if p in state["parts"]]
        self.threshold = float(state["threshold"])
        self.temperature = float(state["temperature"])
        t = lambda k: torch.as_tensor(np.asarray(state[k]), dtype=torch.float32)  # noqa: E731
        for k in ("pca_mean", "pca_components", "bank", "oe_mean", "oe_scale", "oe_weight"):
            self.register_buffer(k, t(k) if k in state else torch.zeros(0), persistent=False)
        self.oe_bias = float(state.get("oe_bias", 0.0))
        norm = state.get("norm") or {p: (0.0, 1.0) for p in self.parts}
        self.register_buffer("norm", torch.tensor([norm[p] for p in self.parts], dtype=torch.float32).reshape(-1, 2),
                             persistent=False)
        weights = state.get("weights") or {}
        self.register_buffer("weights", torch.tensor([float(weights.get(p, 1.0)) for p in self.parts]), persistent=False)
        self.flip = bool(state.get("flip", False))  # the score is the mean over the image and its mirror image

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        x = (feats - self.pca_mean) @ self.pca_components.T
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def raw(self, logits: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """(N, parts) raw part scores, in PARTS order."""
        cols = []
        for p in self.parts:
            if p == "knn":  # the penultimate features only (the first columns)
                cols.append((self.project(feats[:, : self.pca_mean.numel()]) @ self.bank.T).max(1).values)
            elif p == "oe":  # + the texture statistics, when it was fitted with them
                f = feats[:, : self.oe_mean.numel()]
                cols.append(((f - self.oe_mean) / self.oe_scale) @ self.oe_weight + self.oe_bias)
            else:
                cols.append(torch.softmax(logits / self.temperature, 1).max(1).values)
        return torch.stack(cols, 1)

    def forward(self, logits: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        z = (self.raw(logits.float(), feats.float()) - self.norm[:, 0]) / self.norm[:, 1]
        return (z * self.weights).sum(1)


class WithFeatures(torch.nn.Module):
    """model(x) -> (logits, features): the prediction and the open-set score come from the same
    forward pass (and the same ONNX graph). The features are the penultimate ones (`dim` columns,
    what the classifier and the kNN bank see), then the mean and the standard deviation of every
    channel of the last stride-16 feature map: texture statistics that tell a photo or a Gen-3
    artwork from a Gen-1 picture better than the penultimate features alone (README, "Unknown")."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        m = getattr(model, "model", model)  # the original format's 1000-way wrapper
        self._timm = hasattr(m, "forward_head")
        self.tap, self.dim = self._probe(m)

    def _stages(self, m):
        return list(m.blocks) if self._timm else list(m.features)

    def _trunk(self, m, x, tap: int):
        """(last feature map, the output of stage `tap`, each stage's output width)."""
        if self._timm:  # timm EfficientNet.forward_features, with the tap between its blocks
            x = m.bn1(m.conv_stem(x))
        tapped, widths = x, []
        for i, stage in enumerate(self._stages(m)):
            x = stage(x)
            widths.append(x.shape[-1])
            if i == tap:
                tapped = x
        if self._timm:
            x = m.bn2(m.conv_head(x))
        return x, tapped, widths

    @torch.no_grad()
    def _probe(self, m) -> tuple[int, int]:
        """The index of the last stage whose output is 1/16 of the input, and the penultimate width."""
        modes = {mod: mod.training for mod in m.modules()}
        m.eval()  # a probe must not move batch-norm statistics
        try:
            w = next(m.parameters())
            x, _, widths = self._trunk(m, torch.zeros(1, 3, 64, 64, device=w.device, dtype=w.dtype), tap=-1)
            dim = self._head(m, x)[1].shape[1]
        finally:  # each module as it was (frozen stages stay in eval mode)
            for mod, training in modes.items():
                mod.training = training
        taps = [i for i, width in enumerate(widths) if width == 4]
        if not taps:
            raise ValueError(f"{type(m).__name__}: no stage at 1/16 of the input resolution")
        return taps[-1], int(dim)

    def _head(self, m, x):
        if self._timm:
            f = m.forward_head(x, pre_logits=True)
            return m.get_classifier()(f), f
        f = m.classifier[:-1](torch.flatten(m.avgpool(x), 1))  # torchvision MobileNetV3
        return m.classifier[-1](f), f

    def forward(self, x):
        m = getattr(self.model, "model", self.model)
        x, s, _ = self._trunk(m, x, self.tap)
        logits, f = self._head(m, x)
        if m is not self.model:
            logits = logits[:, : self.model.n]
        mu = s.mean((2, 3))
        sd = (s - mu[..., None, None]).square().mean((2, 3)).sqrt()
        return logits, torch.cat([f, mu, sd], 1)


class Scored(torch.nn.Module):
    """x -> (logits, open-set score): what Classifier runs and what `export` writes to ONNX."""

    def __init__(self, model: torch.nn.Module, head: OpenSetHead):
        super().__init__()
        self.net, self.head = WithFeatures(model), head

    def forward(self, x):
        if not self.head.flip:
            logits, feats = self.net(x)
            return logits, self.head(logits, feats)
        n = x.shape[0]  # the image and its mirror image in one batch; the prediction is the image's own
        logits, feats = self.net(torch.cat([x, x.flip(3)]))
        score = self.head(logits, feats)
        return logits[:n], (score[:n] + score[n:]) / 2
