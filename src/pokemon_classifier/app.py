"""The app: a local web page + JSON API for classifying your own pictures, webcam and footage.

    pokemon-classifier serve                       # http://127.0.0.1:7860
    pokemon-classifier serve --weights runs/x/best.pt --port 8000 --threshold 0.4 --device cuda
    pokemon-classifier serve --max-batch 32 --max-wait-ms 10 --max-video-seconds 300
    curl -F file=@pikachu.jpg http://127.0.0.1:7860/api/predict

FastAPI + one static page (no CDN, works offline, phone-sized viewport; API docs at /api/docs with
Swagger UI served from the installed swagger-ui-bundle). Nothing heavy runs on the event loop:
image decoding runs in a thread pool, video decoding in its own worker, and inference in one
batching worker (serving.Batcher) shared by every request, so `GET /api/health` stays instant.
Bodies are cut at the size cap while they stream in; uploads never touch the file system. Every
error is JSON `{"error": "..."}` with 400 (bad input), 413 (over a limit) or 415 (not multipart).
"""

from __future__ import annotations

import asyncio
import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pokemon_classifier.fans import fan_router, localize
from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.predict import video_result
from pokemon_classifier.serving import (Batcher, CappedBody, CatchAll, LimitExceeded, frame_chunks,
                                        full_probabilities, video_frames)

MAX_UPLOAD = 10 * 1024 * 1024
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


def create_app(classifier, max_upload: int = MAX_UPLOAD, topk: int = 5, max_batch: int = 32,
               max_wait_ms: float = 10.0, max_video_seconds: float = 300.0, max_video_frames: int = 1200,
               decode_threads: int | None = None, artwork_url: str | None = None, collect_dir=None) -> FastAPI:
    batcher = Batcher(classifier, max_batch, max_wait_ms)
    decode_pool = ThreadPoolExecutor(decode_threads or min(4, os.cpu_count() or 1), thread_name_prefix="decode")
    video_pool = ThreadPoolExecutor(1, thread_name_prefix="video")  # one video decoded at a time
    video_slot = asyncio.Semaphore(1)  # ... and fed to the batcher one chunk at a time
    n_classes = len(classifier.class_ids)
    page = resources.files("pokemon_classifier").joinpath("static/index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()
        decode_pool.shutdown(wait=False, cancel_futures=True)
        video_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="pokemon-classifier", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=lifespan)
    app.state.batcher = batcher
    app.include_router(fan_router(max_upload=max_upload, artwork_url=artwork_url, collect_dir=collect_dir))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        return _error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

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

    def clamp_k(k: int) -> int:
        return max(1, min(k, n_classes))

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @app.get("/api/health")
    async def health():
        return {"status": "ok", "backend": classifier.backend, "arch": classifier.meta.get("arch"),
                "classes": n_classes, "unknown_threshold": classifier.threshold,  # the top-probability floor
                "open_set": classifier.open_set is not None,  # below its threshold a picture is unknown
                "open_set_threshold": classifier.open_set_threshold,
                "max_batch": batcher.max_batch, "max_wait_ms": batcher.max_wait * 1000,
                "max_upload_mb": max_upload / (1024 * 1024), "max_video_seconds": max_video_seconds,
                "max_video_frames": max_video_frames}

    @app.post("/api/predict")
    async def predict(request: Request, file: UploadFile | None = None, k: int = topk, lang: str | None = None):
        data = await read_upload(request, file, "image")
        if isinstance(data, JSONResponse):
            return data
        loop = asyncio.get_running_loop()
        try:
            with batcher.incoming():
                x = await loop.run_in_executor(decode_pool, classifier.preprocess, data)
                fut = batcher.submit(x[None], [clamp_k(k)])
        except ImageError as e:
            return _error(400, "not a readable image: " + str(e).split(": ", 1)[-1])
        return localize((await asyncio.wrap_future(fut))[0], request, lang)

    @app.post("/api/predict_video")
    async def predict_video(request: Request, file: UploadFile | None = None, fps: float = 2.0, k: int = topk,
                            lang: str | None = None):
        if not (math.isfinite(fps) and fps > 0):
            return _error(400, f"fps must be a positive number, got {fps}")
        data = await read_upload(request, file, "video")
        if isinstance(data, JSONResponse):
            return data
        fps = min(max(fps, 0.1), 10.0)
        loop = asyncio.get_running_loop()
        chunk = max(1, batcher.max_batch // 2)  # half a batch: image requests still fit beside a video chunk
        chunks = frame_chunks(video_frames(data, fps, max_video_seconds, max_video_frames),
                              classifier.preprocess, chunk)
        times, rows, frames = [], [], []
        try:
            async with video_slot:
                while (item := await loop.run_in_executor(video_pool, next, chunks, None)) is not None:
                    if await request.is_disconnected():
                        return _error(400, "client went away")  # nobody reads it; stops the work
                    ts, x = item
                    results = await batcher.run(x, [n_classes] * len(x))
                    times += ts
                    rows += [full_probabilities(classifier, r) for r in results]
                    frames += [dict(r, topk=r["topk"][:clamp_k(k)]) for r in results]
        except ImageError as e:
            return _error(400, "not a readable video: " + str(e))
        except LimitExceeded as e:
            return _error(413, str(e))
        finally:
            video_pool.submit(chunks.close)  # on the decoding thread, after any frame in progress
        if not times:
            return _error(400, "not a readable video: no frames could be decoded")
        return localize(video_result(classifier, times, frames, np.stack(rows), fps, clamp_k(k)), request, lang)

    try:
        from fastapi.staticfiles import StaticFiles
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # docs page off; /api/openapi.json still describes the API
        pass
    else:
        app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

        @app.get("/api/docs", include_in_schema=False)
        async def docs():
            return get_swagger_ui_html(openapi_url="/api/openapi.json", title="pokemon-classifier API",
                                       swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                       swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                       swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")

    app.add_middleware(CappedBody, limit=max_upload)
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
                   "in DIR as images/<name><NNN>.<ext> + annotations.csv")


def main(args) -> int:
    import socket

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
                          threads=args.threads)
    app = create_app(clf, int(args.max_upload_mb * 1024 * 1024), max_batch=args.max_batch,
                     max_wait_ms=args.max_wait_ms, max_video_seconds=args.max_video_seconds,
                     max_video_frames=args.max_video_frames, artwork_url=args.artwork_url, collect_dir=args.collect)
    from pokemon_classifier.certs import uvicorn_tls

    with uvicorn_tls(args.https, args.host) as tls:
        print(f"serving on http{'s' if tls else ''}://{args.host}:{sock.getsockname()[1]}  (Ctrl-C to stop)", flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level="warning", **tls)).run(sockets=[sock])
    return 0
