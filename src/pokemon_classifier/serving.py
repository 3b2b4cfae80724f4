"""The machinery that keeps `pokemon-classifier serve` responsive under load (used by app.py).

    batcher = Batcher(classifier, max_batch=32, max_wait_ms=10)
    results = await batcher.run(batch, [5] * len(batch))   # from any coroutine; never blocks the loop

- Batcher: one inference thread; concurrent requests coalesce into one forward pass of up to
  `max_batch` rows, waiting at most `max_wait_ms` after the oldest queued request, and only while
  more rows are on their way (requests still being decoded, announced with `incoming()`): a lone
  request never waits for company that is not coming. Jobs are served
  first in, first out and never split, so a video that feeds its frames in chunks (awaiting each)
  delays an image request by at most one batch.
- FairTurns: the video decoder's queue, fair between clients one chunk at a time.
- CappedBody: an ASGI middleware that counts the bytes of `http.request` messages as they arrive and
  answers 413 the moment a body (chunked, or with a lying Content-Length) passes the cap; nothing past
  the cap is read, buffered or spooled.
- video_frames: the one video sampler (video.sample_frames) on an upload in memory, with the app's
  limits (duration, frames, pixels per frame).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import heapq
import itertools
import json
import logging
import threading
import time
from collections import deque

import numpy as np
import torch

from pokemon_classifier.images import MAX_PIXELS
from pokemon_classifier import video
from pokemon_classifier.video import LimitExceeded

__all__ = ["LimitExceeded", "video_frames"]  # re-exported: the app's 413 and its video sampler

log = logging.getLogger("pokemon_classifier.serve")


# ------------------------------------------------------------------ batching
class Batcher:
    def __init__(self, classifier, max_batch: int = 32, max_wait_ms: float = 10.0):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.classifier = classifier
        self.max_batch = max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.batch_sizes: list[int] = []  # rows of every forward pass so far (tests and /api/health read it)
        self._jobs: deque = deque()  # (arrival time, batch tensor, ks, future)
        self._cond = threading.Condition()
        self._closed = False
        self._incoming = 0  # requests being decoded that will submit soon
        self._thread = threading.Thread(target=self._loop, name="pokemon-batcher", daemon=True)
        self._thread.start()

    def submit(self, batch: torch.Tensor, ks: list[int]) -> concurrent.futures.Future:
        """Queue (N,3,H,W) rows with one top-k per row; the future resolves to N result dicts."""
        if len(batch) != len(ks):
            raise ValueError("one k per row")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._jobs.append((time.monotonic(), batch, list(ks), fut))
            self._cond.notify()
        return fut

    @contextlib.contextmanager
    def incoming(self):
        """Wrap the decoding of a request that will be submitted: the worker waits for it (up to max wait)."""
        with self._cond:
            self._incoming += 1
        try:
            yield
        finally:
            with self._cond:
                self._incoming -= 1
                self._cond.notify()

    async def run(self, batch: torch.Tensor, ks: list[int]) -> list[dict]:
        import asyncio

        # wrap_future cancels the job if the awaiting request is cancelled (client gone).
        return await asyncio.wrap_future(self.submit(batch, ks))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(10)

    def _take(self) -> list | None:
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            deadline = self._jobs[0][0] + self.max_wait
            while (self._incoming and sum(len(j[1]) for j in self._jobs) < self.max_batch
                   and not self._closed):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken, rows = [], 0
            while self._jobs and (not taken or rows + len(self._jobs[0][1]) <= self.max_batch):
                job = self._jobs.popleft()
                taken.append(job)
                rows += len(job[1])
            return taken

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            jobs = [j for j in jobs if j[3].set_running_or_notify_cancel()]
            if not jobs:
                continue
            try:
                x = torch.cat([j[1] for j in jobs]) if len(jobs) > 1 else jobs[0][1]
                results = self.classifier.predict_tensors(x, [k for j in jobs for k in j[2]])
                self.batch_sizes.append(len(x))
            except Exception as e:  # noqa: BLE001 - handed to the awaiting requests, never kills the worker
                for j in jobs:
                    j[3].set_exception(e)
                continue
            i = 0
            for j in jobs:
                j[3].set_result(results[i:i + len(j[1])])
                i += len(j[1])


# ------------------------------------------------------------------ fair turns
class FairTurns:
    """Turns at one resource (the video decoder), shared fairly between clients (start-time fair
    queueing: a client's next turn is tagged one after its last, never before the turn being served,
    and the smallest tag goes next). A clip takes one turn per chunk, so a second client's short clip
    waits for about one chunk of a long clip, not for all of it; a client's clips share its share.
    Used from one event loop.

        async with turns.turn(request.client.host):
            chunk = await loop.run_in_executor(pool, next, frames, None)
    """

    def __init__(self):
        self._busy = False
        self._now = 0  # the tag of the turn being served
        self._next: dict = {}  # client -> the tag its next turn gets at the earliest
        self._waiting: list = []  # heap of (tag, arrival, future)
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, client):
        import asyncio

        tag = max(self._now, self._next.get(client, 0))
        self._next[client] = tag + 1
        if self._busy:
            fut = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (tag, next(self._arrivals), fut))
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():  # granted just as it was cancelled: pass it on
                    self._release()
                raise
        else:
            self._busy, self._now = True, tag
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            tag, _, fut = heapq.heappop(self._waiting)
            if not fut.done():  # a cancelled waiter is skipped
                self._now = tag
                fut.set_result(None)
                return
        self._busy = False
        # clients whose next turn would be tagged now anyway need no entry: memory stays bounded
        self._next = {c: t for c, t in self._next.items() if t > self._now}


# ------------------------------------------------------------------ body cap
class CappedBody:
    """ASGI middleware: POST bodies on `prefix` paths are cut at `limit` bytes while they stream in.

    The body is collected in memory (at most `limit` bytes) and replayed to the app, so the app's
    multipart parser never sees, or spools to disk, anything beyond the cap."""

    def __init__(self, app, limit: int, prefix: str = "/api/"):
        self.app, self.limit, self.prefix = app, limit, prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(send, self.limit)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.limit:
                return await too_large(send, self.limit)
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later calls: disconnect detection

        await self.app(scope, replay, send)


async def send_json(send, status: int, payload: dict, close: bool = False) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def too_large(send, limit: int) -> None:
    await send_json(send, 413, {"error": f"upload larger than {limit / (1024 * 1024):g} MB"}, close=True)


class CatchAll:
    """ASGI middleware: an unexpected exception becomes a one-line log entry and a JSON 500, never a traceback."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:  # noqa: BLE001
            log.error("%s %s failed: %s: %s", scope["method"], scope["path"], type(e).__name__, e)
            if not started:
                await send_json(send, 500, {"error": "internal error while handling the request"})


# ------------------------------------------------------------------ who may ask
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class SameOriginWrites:
    """ASGI middleware: a POST (or any state-changing method) from a page of another site is refused
    with 403. Browsers say where a request comes from (Sec-Fetch-Site, Origin) even for `no-cors`
    fetches and plain form posts; curl and scripts send neither and are let through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            reason = cross_site(dict(scope["headers"]))
            if reason:
                return await send_json(send, 403, {"error": f"cross-site request refused ({reason}): only this "
                                                            "server's own page may send pictures"}, close=True)
        return await self.app(scope, receive, send)


def cross_site(headers: dict) -> str | None:
    """Why a request with these (lower-case bytes) headers is not from this server's own page, or None."""
    from urllib.parse import urlsplit

    site = headers.get(b"sec-fetch-site")
    if site is not None and site not in (b"same-origin", b"none"):  # none: typed into the address bar
        return f"Sec-Fetch-Site: {site.decode('latin-1')}"
    origin = headers.get(b"origin")
    if origin is not None:
        netloc = urlsplit(origin.decode("latin-1")).netloc.lower()
        if not netloc or netloc != headers.get(b"host", b"").decode("latin-1").lower():
            return f"Origin: {origin.decode('latin-1')[:100]}"
    return None


class AllowedHosts:
    """ASGI middleware: requests whose Host header names none of `hosts` get 400 (DNS rebinding: a
    page of evil.example whose name now points at this machine sends `Host: evil.example`).
    '*' allows every name. A request without Host (HTTP/1.0) cannot come from a browser page: allowed."""

    def __init__(self, app, hosts):
        self.app = app
        self.hosts = {h.strip().lower().strip("[]") for h in hosts if h.strip()}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "*" not in self.hosts:
            host = dict(scope["headers"]).get(b"host")
            if host is not None and host_name(host.decode("latin-1")) not in self.hosts:
                return await send_json(send, 400, {"error": f"Host {host.decode('latin-1')[:100]!r} is not a name of "
                                                            "this server (add it with --allowed-hosts)"}, close=True)
        return await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """'example.org:7860' -> 'example.org', '[::1]:7860' -> '::1' (lower case)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def json_error_protocol():
    """uvicorn's HTTP protocol class, but a request it cannot parse (e.g. `Content-Length: abc`) is
    answered with JSON like every other error, not uvicorn's text/plain."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class JsonBadRequest(AutoHTTPProtocol):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"error": "malformed HTTP request (bad request line, header or Content-Length)"})
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                                 + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}".encode())
            self.transport.close()

    return JsonBadRequest


# ------------------------------------------------------------------ video
def video_frames(data: bytes, fps: float, max_seconds: float, max_frames: int, max_pixels: int = MAX_PIXELS,
                 min_side: int | None = None):
    """(time in s, PIL RGB frame) every 1/fps seconds of an in-memory upload: video.sample_frames with
    the app's limits. Messages never name a file: the upload never touches the file system."""
    return video.sample_frames(data, fps, min_side=min_side, max_seconds=max_seconds, max_frames=max_frames,
                         max_pixels=max_pixels)


def frame_chunks(frames, preprocess, size: int):
    """Group (t, frame) into (times, (n,3,H,W) tensor) chunks of at most `size`, preprocessed."""
    times, xs = [], []
    for t, frame in frames:
        times.append(t)
        xs.append(preprocess(frame))
        if len(xs) == size:
            yield times, torch.stack(xs)
            times, xs = [], []
    if xs:
        yield times, torch.stack(xs)


def full_probabilities(classifier, result: dict) -> np.ndarray:
    """A result asked with k = all classes -> the probability vector in class order."""
    index = {c: i for i, c in enumerate(classifier.class_ids)}
    p = np.zeros(len(classifier.class_ids))
    for t in result["topk"]:
        p[index[t["dex_id"]]] = t["probability"]
    return p
