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

The gate runs both ONNX files in the same process on the test split: top-1 within 0.3 points,
top-5 within 0.2, open-set acceptance and every negatives rate (the reporting half, as `evaluate
--negatives`) within 1 point, ECE reported; and single-picture p50 and batch-32 throughput at
least 2x fp32, measured interleaved. The int8 graph, its gate and a fingerprint of what it was made
from are stored in the checkpoint under "int8" (one shipped file; `calibrate` or new weights change
the fingerprint, and a stale int8 graph is then ignored).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pokemon_classifier.errors import UserError

KEY = "int8"  # the checkpoint's entry
PRECISIONS = ("auto", "int8", "fp32")
GATES = {"top1": 0.003, "top5": 0.002, "open_set": 0.01, "speedup": 2.0}
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
    makes the penultimate features), 'depthwise' (grouped convolutions)."""
    bad = sorted(set(exclude) - set(EXCLUDABLE))
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
    return keep


# the inputs that are shapes, pads or indices (integers), not data
SHAPE_INPUTS = {"Pad": (1, 2, 3), "Reshape": (1,), "Slice": (1, 2, 3, 4), "Expand": (1,), "Tile": (1,),
                "Resize": (1, 2, 3), "Unsqueeze": (1,), "Squeeze": (1,), "ConstantOfShape": (0,)}


def shape_nodes(model) -> list[str]:
    """The nodes that compute shapes, pads or indices: everything upstream of a shape-like input up
    to the Shape nodes, e.g. the integer arithmetic of tf_efficientnet's "same" padding (Shape,
    Div, Ceil, Sub, ...). Quantising those turns the pads into garbage (top-1 agreement with fp32
    fell to 0 when they were)."""
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
             exclude=(), fmt: str = "qdq") -> dict:
    """Write the int8 graph of `fp32_path` to `out` (atomically) and return its recipe."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from pokemon_classifier.export import META_KEY

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
            extra_options={"CalibPercentile": 99.999})
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


# ---------------------------------------------------------------- the gate

def accuracy(clf, data, splits, negatives=None, tuned_on=(), batch_size: int = 32) -> dict:
    """Test-split figures of one ONNX classifier: top-1, top-5, ECE, open-set acceptance and the
    rejection rate of each kind of negative (the reporting half, as `evaluate --negatives`)."""
    from pokemon_classifier import metrics as M
    from pokemon_classifier.evaluate import evaluate_frame, reporting_negative_scores, select

    ev = evaluate_frame(clf, data, select(data, splits, "test"), batch_size, progress=False)
    out = {"n": int(len(ev.y)), "top1": M.topk_accuracy(ev.probs, ev.y, 1), "top5": M.topk_accuracy(ev.probs, ev.y, 5),
           "ece": M.ece(ev.probs, ev.y)}
    if clf.open_set and ev.scores is not None:
        out["accepted"] = float(np.mean([not clf.is_unknown(p, s) for p, s in zip(ev.probs, ev.scores)]))
        if negatives:
            clf.open_set = dict(clf.open_set, tuned_on=list(tuned_on))  # the ONNX metadata does not carry it
            scores, kinds, _, _ = reporting_negative_scores(clf, negatives, batch_size, progress=False)
            out["rejected"] = {str(k): {"n": int((kinds == k).sum()),
                                        "rate": float((scores[kinds == k] < clf.open_set_threshold).mean())}
                               for k in sorted(set(kinds.tolist()))}
    return out


def jpeg(seed: int = 0, size=(320, 240)) -> bytes:
    """A 320x240 JPEG of smooth noise: what predict_latency.py decodes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)).resize(size)
    b = io.BytesIO()
    img.save(b, "JPEG", quality=90)
    return b.getvalue()


def speed(clfs: dict, runs: int = 100, batch_reps: int = 5) -> dict:
    """{name: {p50_ms, p90_ms, batch32_img_s}} for several classifiers measured interleaved (one
    picture of each in turn, then one batch of each in turn), so that a busy machine slows all alike.
    A single picture = decode a 320x240 JPEG + preprocess + model."""
    data = [jpeg(i) for i in range(8)]
    batch = [data[i % 8] for i in range(32)]
    lat = {k: [] for k in clfs}
    thr = {k: 0.0 for k in clfs}
    for clf in clfs.values():  # warm-up
        for i in range(3):
            clf.predict(data[i])
        clf.predict_batch(batch, batch_size=32)
    for i in range(runs):
        for k, clf in clfs.items():
            t = time.perf_counter()
            clf.predict(data[i % 8])
            lat[k].append(time.perf_counter() - t)
    for _ in range(batch_reps):
        for k, clf in clfs.items():
            t = time.perf_counter()
            clf.predict_batch(batch, batch_size=32)
            thr[k] += time.perf_counter() - t
    return {k: {"p50_ms": float(np.percentile(lat[k], 50) * 1000), "p90_ms": float(np.percentile(lat[k], 90) * 1000),
                "batch32_img_s": float(32 * batch_reps / thr[k])} for k in clfs}


def judge(fp32: dict, int8: dict, fast: dict | None) -> dict:
    """Each gate's figures and verdict; `passed` when every one holds."""
    n = fp32.get("n")
    checks = {"top1": {"fp32": fp32["top1"], "int8": int8["top1"], "limit": GATES["top1"], "n": n},
              "top5": {"fp32": fp32["top5"], "int8": int8["top5"], "limit": GATES["top5"], "n": n}}
    if "accepted" in fp32:
        checks["open_set_accepted"] = {"fp32": fp32["accepted"], "int8": int8["accepted"], "limit": GATES["open_set"],
                                       "n": n}
    for kind, r in fp32.get("rejected", {}).items():
        checks[f"rejected {kind}"] = {"fp32": r["rate"], "int8": int8["rejected"][kind]["rate"],
                                      "limit": GATES["open_set"], "n": r.get("n")}
    for c in checks.values():
        c["ok"] = bool(abs(c["int8"] - c["fp32"]) <= c["limit"] + 1e-9)
    if fast:
        for k in ("p50_ms", "batch32_img_s"):
            ratio = fast["fp32"][k] / fast["int8"][k] if k == "p50_ms" else fast["int8"][k] / fast["fp32"][k]
            checks[f"speedup {k}"] = {"fp32": fast["fp32"][k], "int8": fast["int8"][k], "ratio": ratio,
                                      "limit": GATES["speedup"], "ok": bool(ratio >= GATES["speedup"])}
    return {"checks": checks, "passed": all(c["ok"] for c in checks.values()),
            "ece": {"fp32": fp32["ece"], "int8": int8["ece"]}}


def failed(gate: dict) -> list[str]:
    return [k for k, c in gate.get("checks", {}).items() if not c.get("ok")]


def report(gate: dict) -> str:
    lines = []
    for k, c in gate["checks"].items():
        if "ratio" in c:
            lines.append(f"  {k:<34} fp32 {c['fp32']:8.1f}  int8 {c['int8']:8.1f}  x{c['ratio']:.2f} "
                         f"(>= {c['limit']:g})  {'ok' if c['ok'] else 'FAIL'}")
        else:
            lines.append(f"  {k:<34} fp32 {c['fp32']:.4f}  int8 {c['int8']:.4f}  Δ {100 * (c['int8'] - c['fp32']):+.2f} pt "
                         f"(<= {100 * c['limit']:.1f})  {'ok' if c['ok'] else 'FAIL'}"
                         + (f"  [net {round(abs(c['int8'] - c['fp32']) * c['n'])} of {c['n']} pictures]" if c.get("n") else ""))
    lines.append(f"  {'ECE':<34} fp32 {gate['ece']['fp32']:.4f}  int8 {gate['ece']['int8']:.4f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- export --int8

def add_arguments(p) -> None:
    """export's --int8 flags."""
    from pokemon_classifier.fileio import out_file
    from pokemon_classifier.runtime import positive_int

    g = p.add_argument_group("int8 (export --int8)")
    g.add_argument("--int8", action="store_true", help="quantise to int8, gate it against fp32, record it")
    g.add_argument("--data", type=Path, help="with --int8: folder with annotations.csv + images/")
    g.add_argument("--splits", type=Path, help="with --int8: splits.csv (default: DATA/splits.csv); "
                                               "calibrated on its val rows, gated on its test rows")
    g.add_argument("--negatives", type=Path, metavar="DIR", help="with --int8: gate the negatives rates too")
    g.add_argument("--out", type=out_file, help="with --int8: write the checkpoint with its int8 record here "
                                                "(may be --weights itself)")
    g.add_argument("--calibration-images", type=positive_int, default=128, metavar="N",
                   help="with --int8: at most N val images to calibrate on (memory: ~20 MB each)")
    g.add_argument("--method", choices=METHODS, default="minmax", help="with --int8: activation calibration")
    g.add_argument("--no-per-channel", dest="per_channel", action="store_false",
                   help="with --int8: one scale per weight tensor")
    g.add_argument("--exclude", default="", help="with --int8: also keep in fp32: first,last,last-conv,depthwise")
    g.add_argument("--quant-format", choices=["qdq", "qoperator"], default="qdq")
    g.add_argument("--runs", type=positive_int, default=100, help="with --int8: single pictures timed per model")


def main(args, weights) -> int:
    from pokemon_classifier.annotations import safe_image_path
    from pokemon_classifier.evaluate import select
    from pokemon_classifier.export import export_onnx
    from pokemon_classifier.fileio import atomic_open, atomic_torch_save
    from pokemon_classifier.models import read_checkpoint
    from pokemon_classifier.predict import Classifier

    if not args.data:
        raise UserError("--int8 needs --data (its val split calibrates, its test split gates)")
    ck = read_checkpoint(weights)
    if "model" not in ck or "arch" not in ck:
        raise UserError(f"{weights}: --int8 needs a pokemon-classifier checkpoint")
    exclude = [e for e in args.exclude.split(",") if e]
    val = select(args.data, args.splits, "val")
    rng = np.random.default_rng(0)
    names = list(val["img_name"])
    names = [names[i] for i in sorted(rng.choice(len(names), min(len(names), args.calibration_images), replace=False))]
    pre = ck.get("preprocessing")
    with tempfile.TemporaryDirectory() as d:
        fp32_path, int8_path = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        export_onnx(weights, fp32_path)
        t = time.perf_counter()
        calib = Batches([safe_image_path(args.data, n) for n in names],
                        pre or Classifier.load(fp32_path).meta["preprocessing"])
        recipe = quantize(fp32_path, int8_path, calib, args.method, args.per_channel, exclude, args.quant_format)
        recipe.update(calibration={"split": "val", "n": len(names), "seconds": round(time.perf_counter() - t, 1)})
        print(f"quantised on {len(names)} val images in {recipe['calibration']['seconds']:.0f} s: {recipe}", file=sys.stderr)
        clfs = {"fp32": Classifier.load(fp32_path), "int8": Classifier.load(int8_path)}
        tuned = (ck.get("openset") or {}).get("tuned_on", [])
        figures = {k: accuracy(c, args.data, args.splits, args.negatives, tuned) for k, c in clfs.items()}
        fast = speed(clfs, args.runs)
        gate = judge(figures["fp32"], figures["int8"], fast)
        gate.update(recipe=recipe, figures=figures, speed=fast, data=str(args.data), splits=str(args.splits or ""),
                    negatives=str(args.negatives or ""), machine=machine(), when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    size_bytes={"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size})
        print(report(gate))
        print(f"  size: fp32 {gate['size_bytes']['fp32'] / 1e6:.1f} MB, int8 {gate['size_bytes']['int8'] / 1e6:.1f} MB")
        data = int8_path.read_bytes()
    if args.onnx:
        with atomic_open(args.onnx, "wb") as f:
            f.write(data)
        print(f"wrote {args.onnx}")
    if args.out:
        ck[KEY] = record(data, ck, gate)
        atomic_torch_save(ck, args.out)
        print(f"wrote {args.out} (int8 model {'PASSED' if gate['passed'] else 'did NOT pass'} its gates"
              f"{'' if gate['passed'] else ': ' + ', '.join(failed(gate))})")
    print("gates: " + ("passed" if gate["passed"] else "FAILED: " + ", ".join(failed(gate))))
    return 0 if gate["passed"] else 1


def machine() -> str:
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

    return f"{cpu}, {os.cpu_count()} cores, onnxruntime {onnxruntime.__version__}"
