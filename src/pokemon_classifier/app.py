"""The app: a local web page + JSON API for classifying your own pictures, webcam and footage.

    pokemon-classifier serve                       # http://127.0.0.1:7860
    pokemon-classifier serve --weights runs/x/best.pt --port 8000 --threshold 0.4
    curl -F file=@pikachu.jpg http://127.0.0.1:7860/api/predict

FastAPI + one static page (no CDN, works offline, phone-sized viewport). Uploads are read into
memory with a size cap (images) or into a private temp dir that is always removed (videos); no
name or path from the request ever reaches the file system.
"""

from __future__ import annotations

import tempfile
import threading
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from pokemon_classifier.errors import ImageError, UserError
from pokemon_classifier.fans import fan_router, localize

MAX_UPLOAD = 10 * 1024 * 1024


class _TooLarge(Exception):
    pass


async def _read_capped(upload: UploadFile, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(classifier, max_upload: int = MAX_UPLOAD, topk: int = 5, artwork_url: str | None = None,
               collect_dir=None) -> FastAPI:
    app = FastAPI(title="pokemon-classifier", docs_url="/api/docs", openapi_url="/api/openapi.json")
    lock = threading.Lock()  # one inference at a time: torch already uses every core
    page = resources.files("pokemon_classifier").joinpath("static/index.html").read_text(encoding="utf-8")
    app.include_router(fan_router(max_upload=max_upload, artwork_url=artwork_url, collect_dir=collect_dir))

    def too_large():
        return JSONResponse({"error": f"upload larger than {max_upload // (1024 * 1024)} MB"}, status_code=413)

    async def read_upload(file: UploadFile | None, what: str) -> bytes | JSONResponse:
        """The upload's bytes under the size cap, or the error response to send instead."""
        if file is None:
            return JSONResponse({"error": f"send the {what} as multipart field 'file'"}, status_code=400)
        try:
            data = await _read_capped(file, max_upload)
        except _TooLarge:
            return too_large()
        if not data:
            return JSONResponse({"error": "empty upload"}, status_code=400)
        return data

    def clamp_k(k: int) -> int:
        return max(1, min(k, len(classifier.class_ids)))

    @app.middleware("http")
    async def cap_declared_size(request: Request, call_next):
        n = request.headers.get("content-length")
        if request.url.path.startswith("/api/predict") and n and n.isdigit() and int(n) > max_upload + 64 * 1024:
            return too_large()
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return page

    @app.get("/api/health")
    def health():
        return {"status": "ok", "backend": classifier.backend, "arch": classifier.meta.get("arch"),
                "classes": len(classifier.class_ids), "unknown_threshold": classifier.threshold}

    @app.post("/api/predict")
    async def predict(request: Request, file: UploadFile | None = None, k: int = topk, lang: str | None = None):
        data = await read_upload(file, "image")
        if isinstance(data, JSONResponse):
            return data
        try:
            x = classifier.preprocess(data)
        except ImageError as e:
            return JSONResponse({"error": "not a readable image: " + str(e).split(": ", 1)[-1]}, status_code=400)
        with lock:
            result = classifier.predict_tensors(x[None], clamp_k(k))[0]
        return localize(result, request, lang)

    @app.post("/api/predict_video")
    async def predict_video(request: Request, file: UploadFile | None = None, fps: float = 2.0, k: int = topk,
                            lang: str | None = None):
        data = await read_upload(file, "video")
        if isinstance(data, JSONResponse):
            return data
        fps = min(max(fps, 0.1), 10.0)
        with tempfile.TemporaryDirectory(prefix="pokemon-upload-") as d:
            path = Path(d) / "upload.bin"  # fixed name: nothing from the request touches the file system
            path.write_bytes(data)
            try:
                with lock:
                    r = classifier.predict_video(path, fps=fps, topk=clamp_k(k))
            except (ImageError, UserError) as e:
                return JSONResponse({"error": "not a readable video: " + str(e).split(": ", 1)[-1]}, status_code=400)
        return localize(r, request, lang)

    return app


def add_arguments(p) -> None:
    p.add_argument("--weights", help="checkpoint or .onnx (default: best.pt at the repository root)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument("--host", default="127.0.0.1",
                   help="0.0.0.0 serves phones and other machines on your network (the webcam then needs --https)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--threshold", type=float, help="override the 'unknown' threshold")
    p.add_argument("--max-upload-mb", type=float, default=10)
    p.add_argument("--https", action="store_true", help="serve https with a self-signed certificate made at start "
                   "(browsers allow the webcam only on https or localhost)")
    p.add_argument("--artwork-url", metavar="TEMPLATE", help="picture of the predicted Pokemon, e.g. "
                   "'https://example.org/art/{dex_id}.png' ({dex_id}, {dex3} = 025, {name} = pikachu)")
    p.add_argument("--collect", metavar="DIR", help="keep pictures users correct ('Wrong? Pick the right one') "
                   "in DIR as images/<name><NNN>.<ext> + annotations.csv")


def main(args) -> int:
    import uvicorn

    from pokemon_classifier.predict import Classifier

    clf = Classifier.load(args.weights, backend=args.backend, threshold=args.threshold)
    app = create_app(clf, int(args.max_upload_mb * 1024 * 1024), artwork_url=args.artwork_url, collect_dir=args.collect)
    from pokemon_classifier.certs import uvicorn_tls

    with uvicorn_tls(args.https, args.host) as tls:
        print(f"serving on http{'s' if tls else ''}://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", **tls)
    return 0
