"""A loopback web server that speaks Bing's and DuckDuckGo's image-search formats and serves images
with every failure mode the downloader must survive. Used by test_scrape.py and benchmarks/."""

from __future__ import annotations

import html
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
from PIL import Image


def image_bytes(n: int, fmt: str = "JPEG", size: int = 120) -> bytes:
    rng = np.random.default_rng(n)
    arr = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(arr).resize((size, size), Image.NEAREST)
    b = io.BytesIO()
    img.save(b, fmt)
    return b.getvalue()


class FakeWeb:
    def __init__(self, results: dict[str, list[str]] | None = None, image_delay: float = 0.0,
                 engines=("bing", "duckduckgo")):
        self.results = results or {}  # query -> list of image paths (relative, e.g. "/img/ok-1.jpg")
        self.engines = engines  # the engines that have results; the others answer empty pages
        self.image_delay = image_delay
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        self.requests: list[str] = []
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, code, body=b"", ctype="text/html", headers=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                with web.lock:
                    web.requests.append(self.path)
                    web.hits[u.path] = web.hits.get(u.path, 0) + 1
                    count = web.hits[u.path]
                base = f"http://127.0.0.1:{web.port}"
                if u.path == "/images/async":  # Bing
                    items = web.results.get(q.get("q", ""), []) if "bing" in web.engines else []
                    first, n = int(q.get("first", 0)), int(q.get("count", 35))
                    page = items[first:first + n]
                    frag = "".join(
                        f'<div class="imgpt"><a class="iusc" m="{html.escape(json.dumps({"murl": base + p, "turl": base + p + "?t", "purl": base + "/page", "t": "title"}))}" href="#">x</a></div>'
                        for p in page)
                    return self.send(200, f"<ul>{frag}</ul>".encode())
                if u.path == "/":  # DuckDuckGo landing page with the vqd token
                    return self.send(200, b'<html><script>vqd="4-12345678901234567890";</script></html>')
                if u.path == "/i.js":
                    if q.get("vqd") != "4-12345678901234567890":
                        return self.send(403, b"bad vqd")
                    items = web.results.get(q.get("q", ""), []) if "duckduckgo" in web.engines else []
                    s = int(q.get("s", 0))
                    res = [{"image": base + p, "thumbnail": base + p, "url": base + "/page", "title": "t",
                            "width": 120, "height": 120} for p in items[s:s + 100]]
                    return self.send(200, json.dumps({"results": res}).encode(), "application/json")
                if u.path.startswith("/img/"):
                    return self.image(u.path[5:], count)
                return self.send(404, b"not found")

            def image(self, key, count):
                if web.image_delay:
                    time.sleep(web.image_delay)
                kind, _, rest = key.partition("-")
                n = int("".join(ch for ch in rest if ch.isdigit()) or 0)
                if kind == "ok":
                    return self.send(200, image_bytes(n), "image/jpeg")
                if kind == "png":
                    return self.send(200, image_bytes(1000 + n, "PNG"), "image/png")
                if kind == "webp":
                    return self.send(200, image_bytes(2000 + n, "WEBP"), "image/webp")
                if kind == "dup":  # byte-identical to ok-1
                    return self.send(200, image_bytes(1), "image/jpeg")
                if kind == "resized":  # ok-1 at another size: a near-duplicate, not byte-identical
                    return self.send(200, image_bytes(1, size=160), "image/jpeg")
                if kind == "tiny":
                    return self.send(200, image_bytes(n, size=10), "image/jpeg")
                if kind == "404":
                    return self.send(404, b"gone")
                if kind == "500":
                    return self.send(500, b"oops")
                if kind == "flaky403":
                    return self.send(403, b"no") if count == 1 else self.send(200, image_bytes(3000 + n), "image/jpeg")
                if kind == "ratelimited":
                    if count == 1:
                        return self.send(429, b"slow down", headers={"Retry-After": "1"})
                    return self.send(200, image_bytes(4000 + n), "image/jpeg")
                if kind == "slow":
                    time.sleep(3)
                    return self.send(200, image_bytes(5000 + n), "image/jpeg")
                if kind == "drip":  # a slow-drip server: every read succeeds, the body never ends in time
                    b = image_bytes(7000 + n)
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(b)))
                    self.end_headers()
                    try:
                        for i in range(len(b)):
                            self.wfile.write(b[i:i + 1])
                            self.wfile.flush()
                            time.sleep(0.2)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                if kind == "truncated":
                    b = image_bytes(6000 + n)
                    return self.send(200, b[: len(b) // 2], "image/jpeg")
                if kind == "html":
                    return self.send(200, b"<!DOCTYPE html><html>captcha</html>", "image/jpeg")
                if kind == "huge":
                    return self.send(200, b"\xff" * (3 * 1024 * 1024), "image/jpeg")
                if kind == "loop":
                    self.send_response(302)
                    self.send_header("Location", f"/img/{key}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                return self.send(404, b"?")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
