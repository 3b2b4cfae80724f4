"""The ONNX graph of a checkpoint (logits + open-set score, preprocessing embedded), checked with
ONNX Runtime, and its per-user cache: what predict, serve, web and quantize load.

    from pokemon_classifier.onnx_graph import cached_onnx, export_onnx
    export_onnx("best.pt", "model.onnx")      # the `export --onnx` command (export.py) calls this
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from pokemon_classifier.errors import UserError
from pokemon_classifier.fileio import atomic_write_text, remove_stale_temps, temp_beside
from pokemon_classifier.models import load_checkpoint

META_KEY = "pokemon_classifier"
TOLERANCE = 1e-4


def export_onnx(weights, out, opset: int = 17, check: bool = True) -> float:
    """Write `out` atomically; returns max |Δprob| between torch and ONNX Runtime on sample inputs."""
    import onnx

    from pokemon_classifier.openset.scoring import OpenSetHead, Scored

    model, meta = load_checkpoint(weights)
    size = meta["preprocessing"]["size"]
    x = torch.randn(2, 3, size, size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(out)
    os.close(fd)
    # with an open-set state the graph has a second output, the score, computed in the graph
    net = Scored(model, OpenSetHead(meta["openset"])).eval() if meta.get("openset") else model
    names = ["logits", "open_set_score"] if meta.get("openset") else ["logits"]
    torch.onnx.export(net, (x,), str(tmp), input_names=["image"], output_names=names,
                      dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}}, opset_version=opset,
                      dynamo=False)
    m = onnx.load(str(tmp))
    info = {"arch": meta["arch"], "class_ids": [int(i) for i in meta["class_ids"]],
            "preprocessing": meta["preprocessing"], "temperature": float(meta.get("temperature", 1.0)),
            "unknown_threshold": float(meta.get("unknown_threshold", 0.0)), "source": str(weights)}
    if meta.get("openset"):  # the arrays live in the graph; predict needs only the threshold
        info["openset"] = {"threshold": float(meta["openset"]["threshold"]), "parts": list(meta["openset"]["parts"])}
    entry = m.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(info)
    onnx.save(m, str(tmp))
    try:
        delta = check_onnx(net, tmp, size) if check else float("nan")
        if check and delta > TOLERANCE:
            raise UserError(f"{out}: ONNX output differs from PyTorch by {delta:.2e} > {TOLERANCE:g}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return delta


@torch.inference_mode()
def check_onnx(model, path, size: int, n: int = 8, seed: int = 0) -> float:
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    ref = model(x)
    ref = ref if isinstance(ref, tuple) else (ref,)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})
    delta = float(np.abs(torch.softmax(ref[0], 1).numpy() - torch.softmax(torch.from_numpy(got[0]), 1).numpy()).max())
    if len(ref) > 1:  # the open-set score, relative to its scale (a sum of z-scores)
        delta = max(delta, float(np.abs(ref[1].numpy() - got[1]).max()) / 100)
    return delta


def load_onnx(path, threads: int | None = None):
    """(run: tensor -> logits, meta) for an exported model."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("--backend onnx needs `pip install onnxruntime`") from None
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX model not found")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        raise UserError(f"{path}: not a loadable ONNX model ({(' '.join(str(e).split()) or type(e).__name__)[:200]})") from None
    props = sess.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise UserError(f"{path}: no {META_KEY} metadata (export it with `pokemon-classifier export`)")
    meta = json.loads(props[META_KEY])

    def run(x: torch.Tensor):
        out = sess.run(None, {"image": x.numpy().astype(np.float32)})
        return out[0], (out[1].astype(np.float64) if len(out) > 1 and meta.get("openset") else None)

    return run, meta


def graph_code() -> str:
    """A fingerprint of the code that builds the exported graph (models, the open-set scoring modules,
    export): a release that changes how the graph is built re-exports even an unchanged best.pt, and
    one that changes only fitting, statistics or plots does not."""
    import hashlib

    from pokemon_classifier import models
    from pokemon_classifier.openset import scoring

    h = hashlib.sha256()
    for source in (models.__file__, scoring.__file__, __file__):
        h.update(Path(source).read_bytes())
    return h.hexdigest()[:10]


def cached_onnx(weights) -> Path:
    """The ONNX export of checkpoint `weights`, made once and kept in the user cache under the hash of
    the checkpoint's bytes and of the code that builds the graph (so serve starts in a second the
    next time, and a new best.pt or a new release is re-exported)."""
    import onnxruntime  # noqa: F401  (fail here, before exporting, when it is missing)

    from pokemon_classifier.fileio import sha256_file
    from pokemon_classifier.runtime import cache_dir

    key = f"{sha256_file(weights)[:20]}-{graph_code()}-torch{torch.__version__.split('+')[0]}"
    out = cache_dir() / "onnx" / f"{key}.onnx"
    if out.parent.is_dir():  # exports killed mid-write; an hour old, so never one another serve is writing now
        remove_stale_temps(out.parent, lambda name: name.endswith(".onnx"), time.time() - 3600)
    if not _intact(out):
        export_onnx(weights, out)
        atomic_write_text(_digest_path(out), sha256_file(out))
    return out


def _digest_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".sha256")


def _intact(onnx_path: Path) -> bool:
    """Whether a cached export is the file its export wrote: a truncated or corrupted one (a full disk,
    a crash of an older release that wrote no digest) would otherwise fail to load at every start."""
    from pokemon_classifier.fileio import sha256_file

    digest = _digest_path(onnx_path)
    try:
        return onnx_path.is_file() and digest.read_text(encoding="utf-8").strip() == sha256_file(onnx_path)
    except (OSError, UnicodeDecodeError):
        return False
