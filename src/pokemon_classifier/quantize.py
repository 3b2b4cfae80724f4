"""An int8 model: ONNX Runtime static quantisation of the exported graph, gated against fp32.

    pokemon-classifier export --int8 --weights best.pt --data data/pokemon --splits runs/splits.csv \\
        --negatives ../shared/data/negatives --out best.pt        # quantise, gate, record in best.pt
    pokemon-classifier predict photo.jpg                  # int8 when best.pt records a passed gate
    pokemon-classifier predict --precision fp32 photo.jpg # the fp32 model

The fp32 ONNX graph of `export` (logits and the open-set score) is quantised with
`onnxruntime.quantization.quantize_static`: QDQ format, per-channel weights, activations calibrated
on the checkpoint's calibration slice (the `val` rows of --splits, what `calibrate` fits on; never
test). Only the network's own layers are quantised; the open-set score (the kNN bank, the
outlier-exposure head, the texture statistics of WithFeatures) stays fp32, since a sum of z-scores
compared with one threshold is where rounding would move verdicts.

The gate (int8_gate.py, the `export --int8` command) runs both ONNX files in the same process on the test split: top-1 within 0.3 points,
top-5 within 0.2, open-set acceptance and every negatives rate (the reporting half, as `evaluate
--negatives`) within 1 point, ECE reported; and single-picture p50 and batch-32 throughput at
least 2x fp32, measured interleaved. The int8 graph, its gate and a fingerprint of what it was made
from are stored in the checkpoint under "int8" (one shipped file; `calibrate` or new weights change
the fingerprint, and a stale int8 graph is then ignored).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from pokemon_classifier.errors import UserError

KEY = "int8"  # the checkpoint's entry
PRECISIONS = ("auto", "int8", "fp32")
# what makes the exported graph: a change to any of these makes a recorded int8 graph stale
GRAPH_KEYS = ("model", "arch", "class_ids", "preprocessing", "temperature", "unknown_threshold", "openset")
METHODS = ("minmax", "entropy", "percentile")
EXCLUDABLE = ("first", "last", "last-conv", "depthwise")


# ---------------------------------------------------------------- fingerprint and record

def fingerprint(ck: dict) -> str:
    """A hash of the checkpoint entries the exported graph is made from (weights, preprocessing,
    temperature, open-set state), independent of how the file was pickled."""
    h = hashlib.sha256()

    def feed(obj):
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, np.ndarray):
            feed(torch.from_numpy(np.ascontiguousarray(obj)))
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                h.update(f"K{k!s}".encode())
                feed(obj[k])
        elif isinstance(obj, (list, tuple)):
            h.update(f"L{len(obj)}".encode())
            for v in obj:
                feed(v)
        else:
            h.update(f"V{obj!r}".encode())

    for k in GRAPH_KEYS:
        h.update(k.encode())
        feed(ck.get(k))
    return h.hexdigest()[:20]


def record(onnx_bytes: bytes, ck: dict, gate: dict) -> dict:
    """The checkpoint entry: the int8 graph (a uint8 tensor, so the file still loads with
    weights_only=True), its gate, and the fingerprint of what it was made from."""
    return {"onnx": torch.frombuffer(bytearray(onnx_bytes), dtype=torch.uint8),
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(), "source": fingerprint(ck),
            "passed": bool(gate["passed"]), "gate": gate}


def read_record(ck: dict, path) -> dict | None:
    """The checkpoint's int8 entry, or None; a malformed one is a one-line error."""
    rec = ck.get(KEY)
    if rec is None:
        return None
    if not (isinstance(rec, dict) and isinstance(rec.get("onnx"), torch.Tensor) and "source" in rec):
        raise UserError(f"{path}: its '{KEY}' entry is not an int8 model record (re-make it with `export --int8`)")
    return rec


def stored_model(ck: dict, path) -> Path:
    """The checkpoint's int8 graph as a file in the user cache (named by its hash, written once)."""
    from pokemon_classifier.fileio import atomic_open
    from pokemon_classifier.runtime import cache_dir

    rec = ck[KEY]
    data = rec["onnx"].numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != rec.get("sha256"):
        raise UserError(f"{path}: its int8 model is corrupt (hash mismatch); re-make it with `export --int8`")
    out = cache_dir() / "onnx" / f"int8-{rec['sha256'][:20]}.onnx"
    if not out.is_file():
        with atomic_open(out, "wb") as f:
            f.write(data)
    return out


def int8_model(path, precision: str = "auto", device="cpu") -> Path | None:
    """The int8 ONNX file to run for checkpoint `path`, or None for fp32.

    auto: the recorded int8 graph when its gate passed, it matches the checkpoint and the device
    is the CPU; int8: the recorded graph or a one-line error; fp32: None."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: choose {', '.join(PRECISIONS)}")
    path = Path(path)
    if precision == "fp32" or path.suffix == ".onnx":
        if precision == "int8" and path.suffix == ".onnx":
            raise UserError(f"{path}: --precision int8 needs a checkpoint with a recorded int8 model, not an .onnx file")
        return None
    if precision == "auto" and str(device) != "cpu":
        return None
    from pokemon_classifier.models import read_checkpoint

    ck = read_checkpoint(path)
    rec = read_record(ck, path)
    how = "make one with `pokemon-classifier export --int8 --weights W --data DATA --splits S --out W`"
    if rec is None:
        if precision == "int8":
            raise UserError(f"{path}: has no int8 model; {how}")
        return None
    if rec["source"] != fingerprint(ck):
        if precision == "int8":
            raise UserError(f"{path}: its int8 model was made from other weights or calibration; {how}")
        print(f"warning: {path}: its int8 model is stale (weights or calibration changed since); using fp32",
              file=sys.stderr)
        return None
    if not rec["passed"]:
        if precision == "auto":
            return None
        print(f"warning: {path}: its int8 model did not pass its gates ({', '.join(failed(rec['gate'])) or '?'})",
              file=sys.stderr)
    return stored_model(ck, path)


# ---------------------------------------------------------------- quantisation

class Batches:
    """onnxruntime's CalibrationDataReader over preprocessed image batches (made lazily, once)."""

    def __init__(self, paths, preprocessing: dict, batch_size: int = 16):
        self.paths, self.preprocessing, self.batch_size = paths, preprocessing, batch_size
        self._it = None

    def get_next(self):
        if self._it is None:
            from pokemon_classifier.data import readable_batches

            errors: dict = {}
            self._it = iter(readable_batches(self.paths, self.preprocessing, errors, self.batch_size, workers=0))
        try:
            _, x = next(self._it)
        except StopIteration:
            return None
        return {"image": x.numpy().astype(np.float32)}

    def rewind(self):
        self._it = None


def keep_fp32(model, exclude=()) -> list[str]:
    """Names of the nodes that stay fp32: the open-set score (`/head/...`) and the statistics that
    WithFeatures computes itself (nodes directly under `/net/`), plus the `exclude`d kinds:
    'first' (the stem convolution), 'last' (the classifier), 'last-conv' (the last convolution, which
    makes the penultimate features), 'depthwise' (grouped convolutions), or a node-name prefix that
    starts with '/' (e.g. '/net/blocks.5/blocks.5.3/': one block's layers, what the per-layer
    sensitivity scan of tools/int8_select.py names)."""
    prefixes = [e for e in exclude if e.startswith("/")]
    bad = sorted(set(exclude) - set(EXCLUDABLE) - set(prefixes))
    if bad:
        raise UserError(f"--exclude {','.join(bad)}: choose among {', '.join(EXCLUDABLE)}")
    nodes = list(model.graph.node)
    keep = [n.name for n in nodes if n.name.startswith("/head/") or
            (n.name.startswith("/net/") and n.name.count("/") == 2)]
    keep += [n for n in shape_nodes(model) if n not in keep]
    convs = [n for n in nodes if n.op_type == "Conv" and n.name not in keep]
    if "first" in exclude and convs:
        keep.append(convs[0].name)
    if "last" in exclude:
        heads = [n for n in nodes if n.op_type in ("Gemm", "MatMul") and n.name not in keep]
        keep += [n.name for n in heads[-1:]]
    if "last-conv" in exclude and convs:  # the 1x1 convolution that makes the penultimate features
        keep.append(convs[-1].name)
    if "depthwise" in exclude:
        keep += [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    for prefix in prefixes:
        hit = [n.name for n in nodes if n.name.startswith(prefix) and n.name not in keep]
        if not hit and not any(n.startswith(prefix) for n in keep):
            raise UserError(f"--exclude {prefix}: no node of the graph is named so")
        keep += hit
    return keep


# the inputs that are shapes, pads or indices (integers), not data
SHAPE_INPUTS = {"Pad": (1, 2, 3), "Reshape": (1,), "Slice": (1, 2, 3, 4), "Expand": (1,), "Tile": (1,),
                "Resize": (1, 2, 3), "Unsqueeze": (1,), "Squeeze": (1,), "ConstantOfShape": (0,)}


def shape_nodes(model) -> list[str]:
    """The nodes that compute shapes, pads or indices: everything upstream of a shape-like input up
    to the Shape nodes, e.g. the integer arithmetic of tf_efficientnet's "same" padding (Shape,
    Div, Ceil, Sub, ...). Quantising those turns the pads into garbage (top-1 agreement with fp32
    fell to 0 when they were). `export` now pads statically (onnx_graph.static_padding), so its
    graphs have none; an .onnx made otherwise may."""
    producer = {o: n for n in model.graph.node for o in n.output}
    todo = [n.input[i] for n in model.graph.node for i in SHAPE_INPUTS.get(n.op_type, ()) if i < len(n.input)]
    seen: dict[str, None] = {}
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen[node.name] = None
        if node.op_type != "Shape":  # the data above a Shape node is not shape arithmetic
            todo.extend(node.input)
    return list(seen)


def quantize(fp32_path, out, calibration: Batches, method: str = "minmax", per_channel: bool = True,
             exclude=(), fmt: str = "qdq", calibration_cache=None) -> dict:
    """Write the int8 graph of `fp32_path` to `out` (atomically) and return its recipe.

    calibration_cache: a JSON file for onnxruntime's activation ranges (read when it exists, else
    written): the sensitivity scan quantises one graph many times with the same calibration."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from pokemon_classifier.onnx_graph import META_KEY

    if method not in METHODS:
        raise UserError(f"--method {method!r}: choose {', '.join(METHODS)}")
    out = Path(out)
    with tempfile.TemporaryDirectory() as d:
        pre = Path(d) / "pre.onnx"
        try:  # shape inference and graph optimisation first, as onnxruntime recommends; the
            # symbolic shape inference gives up on the open-set head, ONNX's own does not
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        except Exception as e:  # noqa: BLE001 - fall back to the plain graph: still quantisable
            print(f"warning: quantisation pre-processing skipped ({' '.join(str(e).split())[:120]})", file=sys.stderr)
            pre = Path(fp32_path)
        model = onnx.load(str(pre))
        keep = keep_fp32(model, exclude)
        tmp = Path(d) / "int8.onnx"
        quantize_static(
            str(pre), str(tmp), calibration, quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            extra_options={"CalibPercentile": 99.999},
            **({"calibration_cache_path": str(calibration_cache)} if calibration_cache else {}))
        q = onnx.load(str(tmp))
        info = json.loads({p.key: p.value for p in onnx.load(str(fp32_path)).metadata_props}[META_KEY])
        recipe = {"format": fmt, "per_channel": per_channel, "method": method, "exclude": list(exclude),
                  "fp32_nodes": len(keep)}
        info.update(precision="int8", quantization=recipe)
        del q.metadata_props[:]
        entry = q.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(info)
        from pokemon_classifier.fileio import atomic_open

        with atomic_open(out, "wb") as f:
            f.write(q.SerializeToString())
    return recipe


def failed(gate: dict) -> list[str]:
    return [k for k, c in gate.get("checks", {}).items() if not c.get("ok")]
