"""What the app adds for fans: answers in their language, the Pokédex list, page settings, feedback.

    pokemon-classifier serve --artwork-url 'https://example.org/artwork/{dex_id}.png' --collect data/collected
    curl -H 'Accept-Language: de' -F file=@pikachu.jpg http://127.0.0.1:7860/api/predict   # "display_name": "Pikachu", "genus": "Maus-Pokémon"
    curl 'http://127.0.0.1:7860/api/pokedex?lang=ja'

app.py mounts `fan_router(...)` and passes every prediction through `localize()`; the facts live in
pokedex.py, the saving of corrected pictures in collect.py.
"""

from __future__ import annotations

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from pokemon_classifier import pokedex
from pokemon_classifier.errors import ImageError, UserError


def request_language(request: Request | None, lang: str | None = None) -> str:
    """`?lang=` if we support it, else the best of the request's Accept-Language, else English."""
    header = request.headers.get("accept-language") if request is not None else None
    return pokedex.negotiate_language(lang, header)


def localize(result: dict, request: Request | None, lang: str | None = None) -> dict:
    """An image or video verdict with the localized fields added (pokedex.localize_result / localize_video)."""
    if not isinstance(result, dict) or "error" in result:
        return result
    chosen = request_language(request, lang)
    if "overall" in result or "segments" in result:
        return pokedex.localize_video(result, chosen)
    return pokedex.localize_result(result, chosen)


def fan_router(*, max_upload: int = 10 * 1024 * 1024, artwork_url: str | None = None,
               collect_dir=None) -> APIRouter:
    """GET /api/pokedex, GET /api/config and POST /api/feedback (404 unless collect_dir is given)."""
    router = APIRouter()
    collector = None
    if collect_dir is not None:
        from pokemon_classifier.collect import Collector

        collector = Collector(collect_dir, max_bytes=max_upload)

    @router.get("/api/pokedex")
    def pokedex_list(request: Request, lang: str | None = None):
        chosen = request_language(request, lang)
        return {"lang": chosen, "pokemon": pokedex.pokedex_list(chosen)}

    @router.get("/api/config")
    def config(request: Request, lang: str | None = None):
        return {"lang": request_language(request, lang), "languages": pokedex.LANGUAGES,
                "artwork_url": artwork_url, "collect": collector is not None}

    @router.post("/api/feedback")
    async def feedback(file: UploadFile | None = None, dex_id: str | None = Form(None)):
        if collector is None:
            return JSONResponse({"error": "feedback is off (start the server with --collect DIR)"}, status_code=404)
        if file is None or dex_id is None:
            return JSONResponse({"error": "send multipart fields 'file' and 'dex_id'"}, status_code=400)
        chunks, size = [], 0
        while chunk := await file.read(1 << 20):
            size += len(chunk)
            if size > max_upload:
                return JSONResponse({"error": f"upload larger than {max_upload // (1024 * 1024)} MB"},
                                    status_code=413)
            chunks.append(chunk)
        try:
            from starlette.concurrency import run_in_threadpool

            name = await run_in_threadpool(collector.save, b"".join(chunks), dex_id)
        except ImageError as e:
            return JSONResponse({"error": "not a readable image: " + str(e).split(": ", 1)[-1]}, status_code=400)
        except UserError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        dex = int(dex_id)
        return {"saved": f"images/{name}", "dex_id": dex, "name": pokedex.display_name(dex)}

    return router
