"""The ONNX graph of a checkpoint (logits + open-set score, preprocessing embedded), checked with
ONNX Runtime, and its per-user cache: what predict, serve, web and quantize load.

    from pokemon_classifier.onnx_graph import cached_onnx, export_onnx
    export_onnx("best.pt", "model.onnx")      # the `export --onnx` command (export.py) calls this

The graph is exported for the checkpoint's one input size (the batch stays dynamic): timm's
tf_efficientnet layers pad TensorFlow-style ("same"), which torch computes from the input's shape
at run time (Shape, Div, Ceil, Pad nodes in the graph); at a fixed size every such padding is a
constant, folded into its convolution's `pads` (static_padding, fold_pads). Same numbers, fewer
nodes, and nothing between two convolutions that int8 quantisation would have to leave in fp32.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
    torch.onnx.export(static_padding(copy.deepcopy(net), size), (x,), str(tmp), input_names=["image"], output_names=names,
                      dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}}, opset_version=opset,
                      dynamo=False)
    m = fold_pads(onnx.load(str(tmp)))
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


class StaticSame(torch.nn.Module):
    """A timm Conv2dSame (TensorFlow "same" padding computed from the input's shape) with the padding
    of one input size: symmetric padding is the convolution's own; asymmetric padding (stride 2 on
    an even size pads only the right and bottom) is a constant F.pad, which fold_pads moves into the
    ONNX Conv's `pads` (a torch Conv2d has no asymmetric padding)."""

    def __init__(self, conv: torch.nn.Conv2d, pads: tuple[int, int, int, int]):
        super().__init__()
        self.conv, self.pads = conv, tuple(int(p) for p in pads)  # (left, right, top, bottom), as F.pad

    def forward(self, x):
        c, (left, right, top, bottom) = self.conv, self.pads
        if left == right and top == bottom:
            return F.conv2d(x, c.weight, c.bias, c.stride, (top, left), c.dilation, c.groups)
        return F.conv2d(F.pad(x, self.pads), c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def static_padding(net: torch.nn.Module, size: int) -> torch.nn.Module:
    """`net` with each timm Conv2dSame replaced in place by StaticSame for `size` x `size` inputs (the
    feature-map size each one sees is recorded on one forward pass); a net without any is returned as is."""
    try:
        from timm.layers import Conv2dSame
        from timm.layers.padding import get_same_padding
    except ImportError:  # torchvision models only: nothing to replace
        return net
    same = {name: m for name, m in net.named_modules() if isinstance(m, Conv2dSame)}
    if not same:
        return net
    seen: dict[str, tuple[int, int]] = {}

    def hook(name):
        def record(module, args):  # returns None: a pre-hook's return value would replace the input
            seen.setdefault(name, tuple(args[0].shape[-2:]))
        return record

    hooks = [m.register_forward_pre_hook(hook(name)) for name, m in same.items()]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    for name, m in same.items():
        (h, w), (kh, kw), (sh, sw), (dh, dw) = seen[name], m.kernel_size, m.stride, m.dilation
        ph, pw = get_same_padding(h, kh, sh, dh), get_same_padding(w, kw, sw, dw)
        parent, _, leaf = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, leaf,
                StaticSame(m, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))
    return net


def fold_pads(model):
    """The ONNX model with every constant zero Pad that feeds only a Conv folded into that Conv's
    `pads` attribute (what onnxruntime's own PadFusion does at load time, done once in the file, so
    that quantisation sees one Conv instead of a Pad it cannot fuse)."""
    from onnx import helper

    users: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    dead = []
    for pad in [n for n in model.graph.node if n.op_type == "Pad"]:
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        pads = _constant(model, pad.input[1]) if len(pad.input) > 1 else None
        value = _constant(model, pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        convs = users.get(pad.output[0], [])
        if (mode != b"constant" or pads is None or value is None or np.any(value != 0) or len(pads) != 8
                or np.any(pads[[0, 1, 4, 5]] != 0) or np.any(pads < 0) or pad.output[0] in outputs
                or len(pad.input) > 3 or not convs or not all(_explicit_conv(c, pad.output[0]) for c in convs)):
            continue
        for conv in convs:
            attrs = {a.name: a for a in conv.attribute}
            old = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
            new = [old[0] + int(pads[2]), old[1] + int(pads[3]), old[2] + int(pads[6]), old[3] + int(pads[7])]
            if "pads" in attrs:
                conv.attribute.remove(attrs["pads"])
            conv.attribute.append(helper.make_attribute("pads", new))
            conv.input[0] = pad.input[0]
        dead.append(pad)
    for n in dead:
        model.graph.node.remove(n)
    return _prune(model) if dead else model


def _explicit_conv(node, data: str) -> bool:
    """Whether `node` is a 2-D Conv reading `data` as its input only, with explicit pads (no auto_pad)."""
    auto = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
    return (node.op_type == "Conv" and node.input[0] == data and data not in node.input[1:]
            and auto in (b"", b"NOTSET"))


def _constant(model, name: str):
    """The value of `name` when it does not depend on the graph's inputs, else None: torch exports
    F.pad's pads as a small computation on constants (ConstantOfShape, Concat, Slice, ...), which
    onnx's reference evaluator computes here."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    nodes, todo, used = {}, [name], {}
    while todo:
        v = todo.pop()
        if not v or v in used:
            continue
        used[v] = None
        if v in inits:
            continue
        n = producer.get(v)
        if n is None or n.op_type.startswith("Random"):  # a graph input, or not a constant
            return None
        nodes[id(n)] = n
        todo.extend(n.input)
    if name in inits:
        return numpy_helper.to_array(inits[name])
    order = [n for n in graph.node if id(n) in nodes]  # the graph's (topological) order
    sub = helper.make_model(helper.make_graph(order, "constant", [], [helper.make_tensor_value_info(name, 0, None)],
                                              [inits[v] for v in used if v in inits]),
                            opset_imports=model.opset_import, ir_version=model.ir_version)
    return ReferenceEvaluator(sub).run(None, {})[0]


def _prune(model):
    """The model without the nodes that no graph output depends on any more."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for n in reversed(model.graph.node):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    del model.graph.node[:]
    model.graph.node.extend(reversed(keep))
    return model


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
