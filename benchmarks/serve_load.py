"""python benchmarks/serve_load.py [--weights best.pt] [--clients 50] [--requests 4]

Starts the app on a loopback port and fires CLIENTS concurrent clients, each sending REQUESTS
images to POST /api/predict; prints errors and latency p50/p99.
"""

import argparse
import io
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import uvicorn
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=4)
    args = ap.parse_args()
    clf = Classifier.load(args.weights)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = uvicorn.Server(uvicorn.Config(create_app(clf), host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(b, "JPEG")
    data = b.getvalue()

    def client(i):
        out = []
        with requests.Session() as sess:
            for _ in range(args.requests):
                t = time.perf_counter()
                r = sess.post(f"http://127.0.0.1:{port}/api/predict", files={"file": ("x.jpg", data, "image/jpeg")},
                              timeout=120)
                out.append((r.status_code, time.perf_counter() - t))
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as ex:
        res = [x for chunk in ex.map(client, range(args.clients)) for x in chunk]
    wall = time.perf_counter() - t0
    lat = np.array([t for _, t in res]) * 1000
    errors = sum(c != 200 for c, _ in res)
    print(f"{args.clients} concurrent clients x {args.requests} requests: {errors} errors, "
          f"p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, {len(res) / wall:.1f} req/s")
    print(f"machine: {machine()}")
    srv.should_exit = True


if __name__ == "__main__":
    main()
