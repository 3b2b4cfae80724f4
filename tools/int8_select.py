"""Choose the int8 recipe without the test split: agreement with fp32 on held-out tuning data.

    python tools/int8_select.py --weights best.pt --data data/pokemon_frlg --splits runs/splits_frlg.csv \
        --negatives ../shared/data/negatives

Each recipe is quantised exactly as `export --int8` does (the same 128 calibration pictures of the
val slice) and compared with the fp32 ONNX graph on what neither calibration nor the gate reads:
the val pictures left out of calibration and the tuning half of the negatives (the half the
open-set head was fitted on; the reporting half stays for the gate). It counts the pictures whose
top-1 or whose open-set verdict (accept / unknown) changes, and prints the recipes best first (with
the network's batch-32 speed-up over fp32, the two alternated: a tie-breaker, not the gate's figure).

    python tools/int8_select.py ... --sensitivity --limit 400

ranks the network's parts (the stem, each block, the head convolution, the classifier) by how many
of `--limit` held-out pictures change when that part alone stays fp32 (the rest int8, calibrated
once and cached), then keeps the most sensitive parts fp32 one more at a time (greedy) and prints
the changes and the network speed-up of each set: the candidates to pass as --recipe.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pokemon_classifier import openset, quantize as Q
from pokemon_classifier.annotations import safe_image_path
from pokemon_classifier.data import readable_batches
from pokemon_classifier.evaluate import select
from pokemon_classifier.onnx_graph import export_onnx
from pokemon_classifier.models import read_checkpoint

RECIPES = [
    {"method": "minmax"},
    {"method": "percentile"},
    {"method": "entropy"},
    {"method": "minmax", "exclude": ["first", "last"]},
    {"method": "minmax", "exclude": ["last"]},
    {"method": "minmax", "exclude": ["first"]},
    {"method": "percentile", "exclude": ["first", "last"]},
    {"method": "minmax", "exclude": ["last-conv", "last"]},
    {"method": "minmax", "exclude": ["first", "last-conv", "last"]},
    {"method": "minmax", "exclude": ["depthwise"]},
    {"method": "minmax", "per_channel": False},
    {"method": "minmax", "format": "qoperator"},
    # from the --sensitivity scan on the FR/LG file (2026-12-08): blocks.5.0 was the part whose
    # staying fp32 removed most changes; see docs/speed.md
    {"method": "minmax", "exclude": ["/net/blocks.5/blocks.5.0/"]},
    {"method": "minmax", "exclude": ["first", "/net/blocks.5/blocks.5.0/"]},
    {"method": "entropy", "exclude": ["first", "/net/blocks.5/blocks.5.0/"]},
    {"method": "percentile", "exclude": ["first", "/net/blocks.5/blocks.5.0/"]},
]


def parts(model) -> list[str]:
    """The network's quantisable parts as node-name prefixes (quantize.keep_fp32's '/...' excludes):
    the stem, each block, the head convolution, plus 'last' (the classifier)."""
    out: dict[str, None] = {}
    for n in model.graph.node:
        if n.op_type == "Conv" and n.name.startswith("/net/"):
            bits = n.name.split("/")
            out["/".join(bits[:4]) + "/" if bits[2].startswith("blocks") else "/".join(bits[:3]) + "/"] = None
    return list(out) + ["last"]


def arrays(paths, pre):
    errors, xs = {}, []
    for _, x in readable_batches(paths, pre, errors, 32, workers=0):
        xs.append(x.numpy().astype(np.float32))
    return np.concatenate(xs)


def run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = [s.run(None, {"image": x[i:i + 32]}) for i in range(0, len(x), 32)]
    return np.concatenate([o[0] for o in outs]).argmax(1), np.concatenate([o[1] for o in outs])


def speedup(fp32, int8, x, reps: int = 5) -> float:
    """fp32 / int8 seconds for one batch (the network alone, no decoding), the two sessions
    alternated so that a busy machine slows both alike: a tie-breaker, not the gate's figure."""
    import time

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    spent = [0.0, 0.0]
    for s in sessions:
        s.run(None, {"image": x})
    for _ in range(reps):
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, {"image": x})
            spent[i] += time.perf_counter() - t
    return spent[0] / spent[1]


def changes(q, x, y32, s32, thr) -> tuple[int, int]:
    y8, s8 = run(q, x)
    return int((y8 != y32).sum()), int(((s8 >= thr) != (s32 >= thr)).sum())


def sensitivity(fp32, d: Path, calib, x, y32, s32, thr, args) -> int:
    """Per-part scan, then the greedy sets (see the module docstring); printed, nothing chosen."""
    import onnx

    cache, q = d / "ranges.json", d / "scan.onnx"

    def score(exclude):
        Q.quantize(fp32, q, calib, args.method, True, exclude, "qdq", calibration_cache=cache)
        return changes(q, x, y32, s32, thr)

    base = score([])
    print(f"all int8 ({args.method}): top-1 changed {base[0]}, verdict changed {base[1]} of {len(x)}", file=sys.stderr)
    ranking = []
    for part in parts(onnx.load(str(fp32))):
        t, v = score([part])
        ranking.append((t + v, t, v, part))
        print(f"  {part:<40} fp32 alone: top-1 changed {t:3d}  verdict changed {v:3d}", file=sys.stderr, flush=True)
    ranking.sort()
    print(f"parts by sensitivity (changes left when the part alone stays fp32; all int8: {sum(base)}):")
    for total, t, v, part in ranking:
        print(f"  {part:<40} {total:3d}  (top-1 {t}, verdict {v})")
    keep: list[str] = []
    print("greedy: the most sensitive parts kept fp32")
    for _, _, _, part in ranking[:args.greedy]:
        keep.append(part)
        t, v = score(keep)
        print(f"  {json.dumps({'method': args.method, 'exclude': keep}):<90} top-1 changed {t:3d}  "
              f"verdict changed {v:3d}  network x{speedup(fp32, q, x[:32]):.2f}", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="best.pt")
    p.add_argument("--data", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--negatives", required=True)
    p.add_argument("--calibration-images", type=int, default=128)
    p.add_argument("--limit", type=int, default=0, help="score on this many held-out pictures (a random draw)")
    p.add_argument("--sensitivity", action="store_true", help="rank the network's parts (see above)")
    p.add_argument("--method", default="minmax", help="the calibration of the --sensitivity scan")
    p.add_argument("--greedy", type=int, default=6, help="--sensitivity: keep up to this many parts fp32")
    p.add_argument("--recipe", action="append", type=json.loads, metavar="JSON",
                   help='only these recipes, e.g. \'{"method": "minmax", "exclude": ["last"]}\' (repeatable)')
    args = p.parse_args(argv)
    ck = read_checkpoint(args.weights)
    pre, thr = ck["preprocessing"], ck["openset"]["threshold"]
    val = list(select(args.data, args.splits, "val")["img_name"])
    rng = np.random.default_rng(0)  # the same draw as quantize.main
    cal = set(sorted(rng.choice(len(val), min(len(val), args.calibration_images), replace=False)))
    calib = [safe_image_path(args.data, n) for i, n in enumerate(val) if i in cal]
    held = [safe_image_path(args.data, n) for i, n in enumerate(val) if i not in cal]
    table = openset.read_negatives(args.negatives)
    tuned = set(ck["openset"].get("tuned_on", []))
    negs = [p for p in table["path"] if openset.file_key(p) in tuned]
    x = np.concatenate([arrays(held, pre), arrays(negs, pre)])
    if args.limit and args.limit < len(x):
        x = x[np.sort(np.random.default_rng(1).choice(len(x), args.limit, replace=False))]
    print(f"held-out: {len(held)} val pictures + {len(negs)} tuning negatives; scored on {len(x)}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as d:
        fp32 = Path(d) / "fp32.onnx"
        export_onnx(args.weights, fp32)
        y32, s32 = run(fp32, x)
        if args.sensitivity:
            return sensitivity(fp32, Path(d), Q.Batches(calib, pre), x, y32, s32, thr, args)
        rows = []
        for r in args.recipe or RECIPES:
            q = Path(d) / "int8.onnx"
            try:
                Q.quantize(fp32, q, Q.Batches(calib, pre), r["method"], r.get("per_channel", True),
                           r.get("exclude", ()), r.get("format", "qdq"))
            except Q.UserError as e:  # a part named by another architecture's scan
                print(f"skipped {json.dumps(r)}: {e}", file=sys.stderr)
                continue
            y8, s8 = run(q, x)
            rows.append({"recipe": r, "top1_changed": int((y8 != y32).sum()),
                         "verdict_changed": int(((s8 >= thr) != (s32 >= thr)).sum()),
                         "score_mad": float(np.mean(np.abs(s8 - s32))), "model_speedup": speedup(fp32, q, x[:32])})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    rows.sort(key=lambda r: (r["top1_changed"] + r["verdict_changed"], r["score_mad"]))
    print(f"of {len(x)} held-out pictures, best first:")
    for r in rows:
        print(f"  {json.dumps(r['recipe']):<55} top-1 changed {r['top1_changed']:3d}  verdict changed "
              f"{r['verdict_changed']:3d}  mean |score diff| {r['score_mad']:.3f}  network x{r['model_speedup']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
