"""python benchmarks/serve_load.py [--weights best.pt] [--backend auto|torch|onnx] [--max-batch 32] [--max-wait-ms 10]
                                 [--only-video | --no-video]

Starts the app (real uvicorn on a loopback port) with the shipped model, on the backend `serve`
picks by default (auto: ONNX Runtime on the CPU), and prints:
  0. the backend's ceiling: batch-32 throughput of the same picture (decode + preprocessing + model,
     like predict_latency.py), the best of runs before the server starts and after the loads;
  1. sequential throughput: one client, one request at a time;
  2. 16 concurrent clients: throughput as a share of the ceiling (target >= 90%);
  3. 50 concurrent clients x 4 requests: errors, latency p50 / p99 (target < 500 ms), share of the ceiling;
  4. GET /api/health latency while a 30 s video (fps=10, 300 frames) is being classified (target < 50 ms);
  5. a 4K clip (3840x2160 H.264, 6 s at 30 fps, generated here) at fps=10: its time alone, then with
     a second client's short clip (320x240, 3 s) sent 0.5 s after it: how long that one takes.
The image is a 320x240 JPEG; the videos are generated here with PyAV. --only-video runs 5 alone.
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


def _video_4k(seconds: float = 6.0, fps: int = 30, w: int = 3840, h: int = 2160) -> bytes:
    """A small 4K H.264 clip (~190 KB): a colour gradient with a block moving across it."""
    import av

    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 128)], -1).astype(np.uint8)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "4k.mp4"
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "35"})
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for i in range(int(seconds * fps)):
                a = base.copy()
                x0 = (i * 40) % (w - 800)
                a[700:1500, x0:x0 + 800] = (230, 200, 40)
                for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        return path.read_bytes()


def ceiling(clf, data: bytes, reps: int = 3) -> float:
    """Batch-32 img/s of the backend on `data` (decode + preprocessing + model), best of `reps`."""
    batch = [data] * 32
    clf.predict_batch(batch, batch_size=32)  # warm-up
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        clf.predict_batch(batch, batch_size=32)
        best = max(best, 32 / (time.perf_counter() - t))
    return best


def post_video(url: str, data: bytes, fps: float, source: str = "127.0.0.1") -> tuple[int, float]:
    """(status, seconds) of one video request sent from the loopback address `source`."""
    import httpx

    t = time.perf_counter()
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=600) as c:
        r = c.post(f"{url}/api/predict_video?fps={fps:g}", files={"file": ("v.mp4", data, "video/mp4")})
    return r.status_code, time.perf_counter() - t


def video_fairness(url: str) -> None:
    big, small = _video_4k(), _video(3.0)
    code, alone = post_video(url, big, 10)
    print(f"4K clip ({len(big) // 1024} KB, 3840x2160, 6 s) at fps=10 alone: {code}, {alone:.1f} s")
    code, small_alone = post_video(url, small, 10)
    print(f"3 s 320x240 clip at fps=10 alone: {code}, {small_alone:.1f} s")
    with ThreadPoolExecutor(2) as ex:
        first = ex.submit(post_video, url, big, 10, "127.0.0.1")
        time.sleep(0.5)
        second = ex.submit(post_video, url, small, 10, "127.0.0.2")  # another client
        (c1, t1), (c2, t2) = first.result(), second.result()
    print(f"  with a second client's 3 s 320x240 clip sent 0.5 s later: that clip {c2}, {t2:.1f} s "
          f"(waited {max(0.0, t2 - small_alone):.1f} s); the 4K clip {c1}, {t1:.1f} s")


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
    ap.add_argument("--only-video", action="store_true", help="only the 4K clip and the second client's clip (5)")
    ap.add_argument("--no-video", action="store_true", help="only the ceiling and the image loads (0-3)")
    args = ap.parse_args()
    clf = Classifier.load(args.weights, backend=args.backend, threads=args.threads)
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(b, "JPEG")
    data = b.getvalue()
    top = None if args.only_video else ceiling(clf, data)
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
    print(f"machine: {machine()}; backend {clf.backend}, arch {clf.meta.get('arch')}, "
          f"{torch.get_num_threads()} torch threads, max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms")
    if args.only_video:
        video_fairness(url)
        srv.should_exit = True
        return

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
    seq_line = f"sequential: {seq:.1f} req/s ({len(res)} requests, {sum(c != 200 for c, _ in res)} errors)"
    per = max(3, round(args.sequential * 2 / args.concurrent))
    batches_before = len(app.state.batcher.batch_sizes)
    res, wall = load(args.concurrent, per)
    conc, conc_errors = len(res) / wall, sum(c != 200 for c, _ in res)
    sizes = app.state.batcher.batch_sizes[batches_before:]
    res50, wall50 = load(args.clients, args.requests)
    top = max(top, ceiling(clf, data))  # the machine may have been busier before: the best of both
    print(f"backend ceiling: {top:.1f} img/s (batch 32 of the same 320x240 JPEG, decode + preprocessing + model, "
          "best of before and after the loads)")
    print(seq_line)
    print(f"{args.concurrent} concurrent clients: {conc:.1f} req/s = {conc / top:.0%} of the backend ceiling "
          f"({top:.1f} img/s, same run); {len(res)} requests, {conc_errors} errors, "
          f"mean batch {np.mean(sizes):.1f}, {conc / seq:.2f}x sequential")
    lat = np.array([t for _, t in res50]) * 1000
    rate = len(res50) / wall50
    print(f"{args.clients} concurrent clients x {args.requests} requests: {sum(c != 200 for c, _ in res50)} errors, "
          f"p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, {rate:.1f} req/s "
          f"= {rate / top:.0%} of the backend ceiling")

    if args.no_video:
        srv.should_exit = True
        return
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
    video_fairness(url)
    srv.should_exit = True


if __name__ == "__main__":
    main()
