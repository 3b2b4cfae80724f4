"""python benchmarks/serve_load.py [--weights best.pt] [--backend auto|torch|onnx] [--max-batch 32] [--max-wait-ms 10]

Starts the app (real uvicorn on a loopback port) with the shipped model, on the backend `serve`
picks by default (auto: ONNX Runtime on the CPU), and prints:
  1. sequential throughput: one client, one request at a time;
  2. 16 concurrent clients: throughput, and its ratio to (1) in the same run (the batcher's gain);
  3. 50 concurrent clients x 4 requests: errors, latency p50 / p99;
  4. GET /api/health latency while a 30 s video (fps=10, 300 frames) is being classified.
The image is a 320x240 JPEG; the video is generated here with PyAV (320x240, 10 fps, 30 s).
"""

import argparse
import io
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import torch
import uvicorn
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402


def _video(seconds: float = 30.0, fps: int = 10) -> bytes:
    import av

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "v.mp4"
        with av.open(str(path), "w") as c:
            s = c.add_stream("mpeg4", rate=fps)
            s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
            base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
            for i in range(int(seconds * fps)):
                frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")
                for pkt in s.encode(frame):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        return path.read_bytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    ap.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=10)
    ap.add_argument("--sequential", type=int, default=40, help="requests sent one at a time")
    ap.add_argument("--concurrent", type=int, default=16, help="clients for the throughput comparison")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=4, help="requests per client in the latency test")
    args = ap.parse_args()
    clf = Classifier.load(args.weights, backend=args.backend, threads=args.threads)
    app = create_app(clf, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(b, "JPEG")
    data = b.getvalue()
    print(f"machine: {machine()}; backend {clf.backend}, arch {clf.meta.get('arch')}, "
          f"{torch.get_num_threads()} torch threads, max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms")

    def client(n):
        out = []
        with requests.Session() as sess:
            for _ in range(n):
                t = time.perf_counter()
                r = sess.post(f"{url}/api/predict", files={"file": ("x.jpg", data, "image/jpeg")}, timeout=120)
                out.append((r.status_code, time.perf_counter() - t))
        return out

    def load(clients, per_client):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as ex:
            res = [x for chunk in ex.map(client, [per_client] * clients) for x in chunk]
        return res, time.perf_counter() - t0

    client(3)  # warm-up
    res, wall = load(1, args.sequential)
    seq = len(res) / wall
    print(f"sequential: {seq:.1f} req/s ({len(res)} requests, {sum(c != 200 for c, _ in res)} errors)")
    per = max(3, round(args.sequential * 2 / args.concurrent))
    batches_before = len(app.state.batcher.batch_sizes)
    res, wall = load(args.concurrent, per)
    conc = len(res) / wall
    sizes = app.state.batcher.batch_sizes[batches_before:]
    print(f"{args.concurrent} concurrent clients: {conc:.1f} req/s ({len(res)} requests, "
          f"{sum(c != 200 for c, _ in res)} errors, mean batch {np.mean(sizes):.1f}) = {conc / seq:.2f}x sequential")
    res, wall = load(args.clients, args.requests)
    lat = np.array([t for _, t in res]) * 1000
    print(f"{args.clients} concurrent clients x {args.requests} requests: {sum(c != 200 for c, _ in res)} errors, "
          f"p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, {len(res) / wall:.1f} req/s")

    video = _video()
    with ThreadPoolExecutor(1) as ex:
        t0 = time.perf_counter()
        fut = ex.submit(requests.post, f"{url}/api/predict_video?fps=10",
                        files={"file": ("v.mp4", video, "video/mp4")}, timeout=600)
        time.sleep(0.3)  # let the upload land and decoding start
        health = []
        while not fut.done():
            t = time.perf_counter()
            requests.get(f"{url}/api/health", timeout=60)
            health.append((time.perf_counter() - t) * 1000)
            time.sleep(0.05)
        r = fut.result()
        took = time.perf_counter() - t0
    h = np.array(health)
    print(f"health during a 30 s video ({r.status_code}, {r.json().get('frames')} frames in {took:.1f} s): "
          f"{len(h)} checks, p50 {np.percentile(h, 50):.1f} ms, p99 {np.percentile(h, 99):.1f} ms, max {h.max():.1f} ms")
    srv.should_exit = True


if __name__ == "__main__":
    main()
