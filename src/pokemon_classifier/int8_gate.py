"""The int8 model's gate and the `export --int8` command: quantise (quantize.py), compare with fp32 on the
test split, record the verdict in the checkpoint.

    pokemon-classifier export --int8 --weights best.pt --data data/pokemon --splits runs/splits.csv \\
        --negatives ../shared/data/negatives --out best.pt

Kept apart from quantize.py, which predict imports to run a recorded int8 graph: the gate reads
evaluate (and so predict), the library must not.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pokemon_classifier.errors import UserError
from pokemon_classifier.runtime import machine
from pokemon_classifier.quantize import KEY, METHODS, Batches, failed, quantize, record

GATES = {"top1": 0.003, "top5": 0.002, "open_set": 0.01, "speedup": 2.0}


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
    g.add_argument("--exclude", default="", help="with --int8: also keep in fp32: first,last,last-conv,depthwise or a node-name "
                                              "prefix such as /net/blocks.5/blocks.5.0/ (tools/int8_select.py --sensitivity)")
    g.add_argument("--quant-format", choices=["qdq", "qoperator"], default="qdq")
    g.add_argument("--runs", type=positive_int, default=100, help="with --int8: single pictures timed per model")


def main(args, weights) -> int:
    from pokemon_classifier.annotations import safe_image_path
    from pokemon_classifier.evaluate import select
    from pokemon_classifier.onnx_graph import export_onnx
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
