"""python benchmarks/predict_latency.py [--weights best.pt] [--runs 100]

Single-image latency (p50, p90; decode + preprocessing + model) and batch-32 throughput on this
machine, torch eager vs ONNX Runtime, for mobilenet_v3_large and efficientnet_lite0 at their
default size, plus the shipped best.pt when present, with an `onnx-int8` row when it records an
int8 model (`export --int8`; its row says whether it passed its gates). The shipped file's fp32
ONNX and int8 rows are measured interleaved (int8_gate.speed), so a busy machine slows both alike;
the last line gives their ratio.
"""

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

from pokemon_classifier import pokedex  # noqa: E402
from pokemon_classifier.onnx_graph import export_onnx  # noqa: E402
from pokemon_classifier.models import build_model, default_weights, preprocessing  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402
from pokemon_classifier.int8_gate import speed  # noqa: E402


def int8_row(path) -> str | None:
    """'onnx-int8' (gates passed) or 'int8-FAIL' (recorded, gates not passed) or None (none recorded)."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    rec = ck.get("int8") if isinstance(ck, dict) else None
    return None if rec is None else ("onnx-int8" if rec["passed"] else "int8-FAIL")


def int8_size(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["int8"]["onnx"].numel()


def jpeg(seed=0, size=(320, 240)) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)).resize(size)
    b = io.BytesIO()
    img.save(b, "JPEG", quality=90)
    return b.getvalue()


def bench(clf, runs):
    data = [jpeg(i) for i in range(8)]
    for i in range(5):
        clf.predict(data[i % 8])
    lat = []
    for i in range(runs):
        t = time.perf_counter()
        clf.predict(data[i % 8])
        lat.append(time.perf_counter() - t)
    batch = [data[i % 8] for i in range(32)]
    clf.predict_batch(batch, batch_size=32)
    t = time.perf_counter()
    reps = 3
    for _ in range(reps):
        clf.predict_batch(batch, batch_size=32)
    thr = 32 * reps / (time.perf_counter() - t)
    return np.percentile(lat, 50) * 1000, np.percentile(lat, 90) * 1000, thr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = []
    with tempfile.TemporaryDirectory() as d:
        for arch in ("mobilenet_v3_large", "efficientnet_lite0"):
            p = Path(d) / f"{arch}.pt"
            torch.save({"model": build_model(arch).state_dict(), "arch": arch, "class_ids": list(pokedex.IDS),
                        "preprocessing": preprocessing(arch)}, p)
            models.append((f"{arch} @224", p))
        shipped = Path(args.weights) if args.weights else default_weights()
        if shipped:
            models.append((f"shipped {shipped.name}", shipped))
        print(f"{'model':<32} {'backend':<8} {'p50 ms':>8} {'p90 ms':>8} {'batch-32 img/s':>15}")
        for name, p in models:
            onnx_path = Path(d) / (p.stem + ".onnx")
            export_onnx(p, onnx_path)
            int8 = int8_row(p)
            for backend, path in (("torch", p),) + ((("onnx", onnx_path),) if not int8 else ()):
                clf = Classifier.load(path, backend=backend)
                p50, p90, thr = bench(clf, args.runs)
                print(f"{name:<32} {backend:<8} {p50:8.1f} {p90:8.1f} {thr:15.1f}", flush=True)
            if int8:  # fp32 and int8 ONNX interleaved in one loop: their ratio is fair on a busy machine
                clfs = {"onnx": Classifier.load(onnx_path), int8: Classifier.load(p, precision="int8")}
                fig = speed(clfs, args.runs)
                for backend, f in fig.items():
                    print(f"{name:<32} {backend:<8} {f['p50_ms']:8.1f} {f['p90_ms']:8.1f} {f['batch32_img_s']:15.1f}",
                          flush=True)
                print(f"{'':<32} int8/fp32 ONNX: p50 x{fig['onnx']['p50_ms'] / fig[int8]['p50_ms']:.2f} faster, "
                      f"batch-32 x{fig[int8]['batch32_img_s'] / fig['onnx']['batch32_img_s']:.2f}; file "
                      f"{onnx_path.stat().st_size / 1e6:.1f} MB fp32, {int8_size(p) / 1e6:.1f} MB int8")
    print("single image = decode a 320x240 JPEG + resize + crop + normalise + model, one at a time")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
