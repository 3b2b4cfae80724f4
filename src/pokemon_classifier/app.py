"""The app: a local web page + JSON API for classifying your own pictures, webcam and footage.

    pokemon-classifier serve                       # http://127.0.0.1:7860
    pokemon-classifier serve --weights runs/x/best.pt --port 8000 --threshold 0.4 --device cuda
    pokemon-classifier serve --max-batch 32 --max-wait-ms 10 --max-video-seconds 300
    curl -F file=@pikachu.jpg http://127.0.0.1:7860/api/predict

FastAPI + one static page (no CDN, works offline, phone-sized viewport; API docs at /api/docs with
Swagger UI served from the installed swagger-ui-bundle). Nothing heavy runs on the event loop:
image decoding runs in a thread pool (large JPEGs at a reduced scale), video decoding in its own
worker (frames shrunk as they are decoded, one chunk per turn, round-robin between clients), and
inference in one batching worker (serving.Batcher) shared by every request, so `GET /api/health`
stays instant and a short clip is not stuck behind a long one.
Bodies are cut at the size cap while they stream in and parsed in memory (never spooled to a temp
file). POSTs from another site's page are refused (403) and the Host header must name this server
(--allowed-hosts; DNS rebinding). Every error is JSON `{"error": "..."}` with 400 (bad input, pictures
longer than 20:1 included), 403 (cross-site), 413 (over a limit), 415 (not multipart) or 429 (too many
corrections); even a request uvicorn cannot parse gets JSON.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources

import numpy as np
from fastapi import APIRouter, FastAPI, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser

from pokemon_classifier.fans import fan_router, localize
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.predict import video_result
from pokemon_classifier.images import load_image
from pokemon_classifier.presets import resize_size
from pokemon_classifier.serving import (AllowedHosts, Batcher, CappedBody, CatchAll, FairTurns, LimitExceeded,
                                        SameOriginWrites, frame_chunks, full_probabilities, video_frames)
from pokemon_classifier import where as where_api

MAX_UPLOAD = 10 * 1024 * 1024
MIN_FPS, MAX_FPS = 0.1, 10.0  # frames sampled per second of video (README)
DOCS_ASSETS = "/api/docs/assets"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "body")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}"
                     + (f" (got {err['input']!r})" if isinstance(err.get("input"), (str, int, float)) else ""))
    return "; ".join(parts).replace("\n", " ")


class Service:
    """What the routers share: the classifier, its batcher, the decoding pools and the limits."""

    def __init__(self, classifier, max_upload: int, topk: int, max_batch: int, max_wait_ms: float,
                 max_video_seconds: float, max_video_frames: int, decode_threads: int | None):
        self.classifier, self.max_upload, self.topk = classifier, max_upload, topk
        self.max_video_seconds, self.max_video_frames = max_video_seconds, max_video_frames
        self.batcher = Batcher(classifier, max_batch, max_wait_ms)
        self.decode_pool = ThreadPoolExecutor(decode_threads or min(4, os.cpu_count() or 1),
                                              thread_name_prefix="decode")
        self.video_pool = ThreadPoolExecutor(1, thread_name_prefix="video")  # one video chunk decoded at a time
        self.video_turns = FairTurns()  # ... taking turns, round-robin between clients
        self.n_classes = len(classifier.class_ids)
        # The model resizes every picture's shorter side to this: large JPEGs and video frames are
        # decoded straight to about this size (images.load_image, video.sample_frames).
        self.min_side = resize_size(classifier.meta["preprocessing"])
        self.where = where_api.Where(classifier, self.batcher)  # ?explain=1 and ?multi=1: the torch model, one at a time

    def decode(self, data: bytes):
        """Upload bytes -> the model's input tensor (3,H,W); ImageError when unusable."""
        return self.classifier.transform(load_image(data, min_side=self.min_side))

    def clamp_k(self, k: int) -> int:
        return max(1, min(k, self.n_classes))

    def close(self) -> None:
        self.batcher.close()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.video_pool.shutdown(wait=False, cancel_futures=True)
        self.where.close()


async def read_upload(request: Request, file: UploadFile | None, what: str) -> bytes | JSONResponse:
    """The upload's bytes (already under the cap: CappedBody cut anything larger), or the error to send."""
    if file is None:
        ctype = request.headers.get("content-type", "")
        if ctype and not ctype.startswith("multipart/form-data"):
            return _error(415, f"send the {what} as multipart/form-data field 'file'")
        return _error(400, f"send the {what} as multipart field 'file'")
    data = await file.read()
    if not data:
        return _error(400, "empty upload")
    return data


def page_router(svc: Service) -> APIRouter:
    """GET / (the page) and GET /api/health."""
    router = APIRouter()
    page = resources.files("pokemon_classifier").joinpath("static/index.html").read_text(encoding="utf-8")
    clf, batcher = svc.classifier, svc.batcher

    @router.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @router.get("/api/health")
    async def health():
        return {"status": "ok", "backend": clf.backend, "arch": clf.meta.get("arch"),
                "classes": svc.n_classes, "unknown_threshold": clf.threshold,  # the top-probability floor
                "open_set": clf.open_set is not None,  # below its threshold a picture is unknown
                "open_set_threshold": clf.open_set_threshold,
                "max_batch": batcher.max_batch, "max_wait_ms": batcher.max_wait * 1000,
                "max_upload_mb": svc.max_upload / (1024 * 1024), "max_video_seconds": svc.max_video_seconds,
                "max_video_frames": svc.max_video_frames}

    return router


def predict_router(svc: Service) -> APIRouter:
    """POST /api/predict: one picture -> top-k verdict; ?explain=1 adds the Grad-CAM overlay and its peak,
    ?multi=1 every Gen-1 Pokemon with boxes (where.py: the torch model, one request at a time)."""
    router = APIRouter()

    @router.post("/api/predict")
    async def predict(request: Request, file: UploadFile | None = None, k: int = svc.topk, lang: str | None = None,
                      explain: bool = False, multi: bool = False):
        data = await read_upload(request, file, "image")
        if isinstance(data, JSONResponse):
            return data
        loop = asyncio.get_running_loop()
        try:
            with svc.batcher.incoming():
                if await request.is_disconnected():  # a client that left costs no decoding ...
                    return _error(400, "client went away")
                x = await loop.run_in_executor(svc.decode_pool, svc.decode, data)
                if await request.is_disconnected():  # ... and no forward pass
                    return _error(400, "client went away")
                fut = svc.batcher.submit(x[None], [svc.clamp_k(k)])
        except ImageError as e:
            return _error(400, "not a readable image: " + str(e).split(": ", 1)[-1])
        # A JSONResponse skips FastAPI's jsonable_encoder walk of the dict (1.3 ms a request here, more
        # than localizing it): the result is plain JSON types already.
        result = (await asyncio.wrap_future(fut))[0]
        out = localize(result, request, lang)
        if explain or multi:
            extra = await where_api.answer(svc.where, request, data, result, explain, multi, lang)
            if isinstance(extra, tuple):
                return _error(*extra)
            out.update(extra)
        return JSONResponse(out)

    return router


def video_router(svc: Service) -> APIRouter:
    """POST /api/predict_video: frames sampled at `fps` -> the story of the clip."""
    router = APIRouter()
    clf, batcher = svc.classifier, svc.batcher

    @router.post("/api/predict_video")
    async def predict_video(request: Request, file: UploadFile | None = None, fps: float = 2.0, k: int = svc.topk,
                            lang: str | None = None):
        if not (math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):  # refused, not clamped: the answer says what ran
            return _error(400, f"fps must be between {MIN_FPS:g} and {MAX_FPS:g}, got {fps:g}")
        data = await read_upload(request, file, "video")
        if isinstance(data, JSONResponse):
            return data
        loop = asyncio.get_running_loop()
        chunk = max(1, batcher.max_batch // 2)  # half a batch: image requests still fit beside a video chunk
        chunks = frame_chunks(video_frames(data, fps, svc.max_video_seconds, svc.max_video_frames,
                                           min_side=svc.min_side), clf.preprocess, chunk)
        client = request.client.host if request.client else None
        times, rows, frames = [], [], []
        try:
            while True:
                async with svc.video_turns.turn(client):  # one chunk per turn: a short clip never waits a long one out
                    item = await loop.run_in_executor(svc.video_pool, next, chunks, None)
                if item is None:
                    break
                if await request.is_disconnected():
                    return _error(400, "client went away")  # nobody reads it; stops the work
                ts, x = item
                results = await batcher.run(x, [svc.n_classes] * len(x))
                times += ts
                rows += [full_probabilities(clf, r) for r in results]
                frames += [dict(r, topk=r["topk"][:svc.clamp_k(k)]) for r in results]
        except ImageError as e:
            return _error(400, "not a readable video: " + str(e).removeprefix("<image>: "))  # a frame's shape
        except LimitExceeded as e:
            return _error(413, str(e))
        finally:
            svc.video_pool.submit(chunks.close)  # on the decoding thread, after any frame in progress
        if not times:
            return _error(400, "not a readable video: no frames could be decoded")
        return JSONResponse(localize(video_result(clf, times, frames, np.stack(rows), fps, svc.clamp_k(k)),
                                     request, lang))

    return router


def mount_docs(app: FastAPI) -> None:
    """/api/docs from the installed swagger-ui-bundle (no CDN); without it only /api/openapi.json."""
    try:
        from fastapi.staticfiles import StaticFiles
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/api/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="pokemon-classifier API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


def create_app(classifier, max_upload: int = MAX_UPLOAD, topk: int = 5, max_batch: int = 32,
               max_wait_ms: float = 10.0, max_video_seconds: float = 300.0, max_video_frames: int = 1200,
               decode_threads: int | None = None, artwork_url: str | None = None, collect_dir=None,
               collect_max_mb: float | None = 500, collect_max_files: int | None = 5000,
               collect_per_minute: int | None = None, allowed_hosts=None, device_site=None) -> FastAPI:
    """The app: the routers above + fans.fan_router, JSON errors, and the request guards (outermost
    first): CatchAll, AllowedHosts (when `allowed_hosts` is given), SameOriginWrites, CappedBody."""
    svc = Service(classifier, max_upload, topk, max_batch, max_wait_ms, max_video_seconds, max_video_frames,
                  decode_threads)
    # Uploads stay in memory up to the cap (Starlette would spool parts over 1 MB to a temp file); the
    # body is already held to max_upload by CappedBody, so this costs at most that much per request.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, max_upload + 1)

    @asynccontextmanager
    async def lifespan(_app):
        if isinstance(device_site, DeviceSite):
            device_site.start()
        yield
        svc.close()

    app = FastAPI(title="pokemon-classifier", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=lifespan)
    app.state.batcher = svc.batcher
    for router in (page_router(svc), predict_router(svc), video_router(svc),
                   fan_router(max_upload=max_upload, artwork_url=artwork_url, collect_dir=collect_dir,
                              collect_max_mb=collect_max_mb, collect_max_files=collect_max_files,
                              collect_per_minute=collect_per_minute)):
        app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        return _error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    mount_docs(app)
    if device_site is not None:  # "Run on this device": the static site of the same model (web.served_site)
        from fastapi.staticfiles import StaticFiles

        site = device_site if isinstance(device_site, DeviceSite) else StaticFiles(directory=device_site, html=True)
        app.mount("/device", site, name="device")
    app.add_middleware(CappedBody, limit=max_upload)
    app.add_middleware(SameOriginWrites)
    if allowed_hosts is not None:
        app.add_middleware(AllowedHosts, hosts=allowed_hosts)
    app.add_middleware(CatchAll)
    return app


def add_arguments(p) -> None:
    from pokemon_classifier.runtime import nonnegative_float, positive_float, positive_int

    p.add_argument("--weights", help="checkpoint or .onnx (default: the shipped best.pt)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="auto: ONNX Runtime on the CPU (the checkpoint is exported once into the user cache and "
                        "checked against torch; about 2x the throughput of torch here), torch on a GPU")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1")
    p.add_argument("--threads", type=positive_int, help="torch / ONNX Runtime threads for inference (default: all cores)")
    p.add_argument("--precision", choices=["auto", "int8", "fp32"], default="auto",
                   help="auto: the checkpoint's int8 model when it records passed gates (`export --int8`; CPU), "
                        "else fp32; as predict's")
    p.add_argument("--host", default="127.0.0.1",
                   help="0.0.0.0 serves phones and other machines on your network (the webcam then needs --https)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--threshold", type=float, help="override the 'unknown' threshold")
    p.add_argument("--max-upload-mb", type=positive_float, default=10)
    p.add_argument("--max-batch", type=positive_int, default=32, help="most images in one forward pass")
    p.add_argument("--max-wait-ms", type=nonnegative_float, default=10, help="longest wait for a batch to fill")
    p.add_argument("--max-video-seconds", type=positive_float, default=300)
    p.add_argument("--max-video-frames", type=positive_int, default=1200, help="most frames sampled from one video")
    p.add_argument("--https", action="store_true", help="serve https with a self-signed certificate made at start "
                   "(browsers allow the webcam only on https or localhost)")
    p.add_argument("--artwork-url", metavar="TEMPLATE", help="picture of the predicted Pokemon, e.g. "
                   "'https://example.org/art/{dex_id}.png' ({dex_id}, {dex3} = 025, {name} = pikachu)")
    p.add_argument("--collect", metavar="DIR", help="keep pictures users correct ('Wrong? Pick the right one') "
                   "in DIR as images/<name><NNN>.<ext> + annotations.csv; 'not a Pokemon' / 'later generation' "
                   "answers in DIR/negatives, for calibrate --negatives DIR/negatives")
    p.add_argument("--collect-max-mb", type=positive_float, default=500,
                   help="with --collect: the folder's budget; feedback answers 413 once its pictures use this much")
    p.add_argument("--collect-max-files", type=positive_int, default=5000, help="with --collect: most pictures kept")
    p.add_argument("--collect-per-minute", type=positive_int, default=30,
                   help="with --collect: most pictures one client address may send a minute (then 429; behind "
                        "a proxy every client shares the proxy's address)")
    p.add_argument("--allowed-hosts", metavar="NAMES", help="comma-separated names this server answers to in "
                   "the Host header (default: the names and addresses of --host; '*' for any, e.g. behind a proxy)")


def served_names(host: str) -> list[str]:
    """The Host names a browser can use for `--host` (the DNS-rebinding guard's default)."""
    from pokemon_classifier.certs import local_names

    loopback = ["localhost", "127.0.0.1", "::1"]
    if host in ("0.0.0.0", "::", ""):
        dns, ips = local_names()
        return sorted(set(loopback + dns + ips + [f"{d}.local" for d in dns if "." not in d]))
    return sorted(set(loopback + [host.lower()]))


def exposed_collect_warning(host: str, https: bool, collect) -> str | None:
    """A warning when pictures can be written over plain http from other machines."""
    import ipaddress

    if not collect or https:
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    return (f"warning: --collect on {host} without --https: anyone on the network can send pictures "
            "into the folder, and they travel unencrypted")


def uvicorn_config(app, **kwargs):
    """The uvicorn settings `serve` runs with (JSON answers even to requests uvicorn cannot parse)."""
    import uvicorn

    from pokemon_classifier.serving import json_error_protocol

    return uvicorn.Config(app, **{"log_level": "warning", "http": json_error_protocol(), **kwargs})


class DeviceSite:
    """The ASGI app at /device/: the served model's static site (web.served_site), built in a thread once
    the server starts (an ONNX export the first time: seconds), so serve starts as fast as before;
    404 until it is ready, and for good (with a one-line note) where it cannot be built."""

    def __init__(self, weights):
        self.weights, self.static, self.started = weights, None, False

    def start(self) -> None:
        if not self.started:
            self.started = True
            threading.Thread(target=self._build, daemon=True, name="device-site").start()

    def _build(self) -> None:
        import sys

        from fastapi.staticfiles import StaticFiles

        from pokemon_classifier import web
        from pokemon_classifier.models import resolve_weights

        try:
            self.static = StaticFiles(directory=web.served_site(resolve_weights(self.weights)), html=True)
        except (UserError, ImportError, OSError) as e:
            print(f"note: no on-device mode (/device/): {e}", file=sys.stderr, flush=True)

    async def __call__(self, scope, receive, send):
        if self.static is None:
            await JSONResponse({"detail": "the on-device site is not ready"}, status_code=404)(scope, receive, send)
        else:
            await self.static(scope, receive, send)


def main(args) -> int:
    import socket
    import sys

    import uvicorn

    from pokemon_classifier.predict import Classifier

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a TCP port (0-65535)")
    if args.max_batch < 1 or not (args.max_wait_ms >= 0) or not (args.max_upload_mb > 0):
        raise UserError("--max-batch must be >= 1, --max-wait-ms >= 0 and --max-upload-mb > 0")
    # Bind before loading the model, so a taken port fails in a second with one line.
    try:
        info = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
    except (OSError, socket.gaierror) as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    clf = Classifier.load(args.weights, backend=args.backend, device=args.device, threshold=args.threshold,
                          threads=args.threads, precision=args.precision)
    hosts = args.allowed_hosts.split(",") if args.allowed_hosts else served_names(args.host)
    app = create_app(clf, int(args.max_upload_mb * 1024 * 1024), max_batch=args.max_batch,
                     max_wait_ms=args.max_wait_ms, max_video_seconds=args.max_video_seconds,
                     max_video_frames=args.max_video_frames, artwork_url=args.artwork_url, collect_dir=args.collect,
                     collect_max_mb=args.collect_max_mb, collect_max_files=args.collect_max_files,
                     collect_per_minute=args.collect_per_minute, allowed_hosts=hosts,
                     device_site=DeviceSite(args.weights))
    if warning := exposed_collect_warning(args.host, args.https, args.collect):
        print(warning, file=sys.stderr, flush=True)
    from pokemon_classifier.certs import uvicorn_tls

    with uvicorn_tls(args.https, args.host) as tls:
        config = uvicorn_config(app, **tls)
        config.load()  # reads the certificate and key into memory: their folder goes before we serve
    print(f"serving on http{'s' if tls else ''}://{args.host}:{sock.getsockname()[1]}  (Ctrl-C to stop)", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
