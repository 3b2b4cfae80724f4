"""What the app adds for fans: answers in their language, the Pokédex list, page settings, feedback.

    pokemon-classifier serve --artwork-url 'https://example.org/artwork/{dex_id}.png' --collect data/collected
    curl -H 'Accept-Language: de' -F file=@pikachu.jpg http://127.0.0.1:7860/api/predict   # "display_name": "Pikachu", "genus": "Maus-Pokémon"
    curl 'http://127.0.0.1:7860/api/pokedex?lang=ja'
    curl 'http://127.0.0.1:7860/api/ui-strings?lang=ja'    # the page's own strings (static/i18n.json)

app.py mounts `fan_router(...)` and passes every prediction through `localize()`; the facts live in
pokedex.py, the saving of corrected pictures in collect.py. POST /api/feedback is the app's one write:
app.py's guards let only its own page and names reach it, and here it is held to a budget
(--collect-max-mb, --collect-max-files: 413), to --collect-per-minute per client address (429) and to
one correction per picture (409: a double click or a replay stores nothing more). It takes `dex_id`
(1..151) or `answer` (not-pokemon, later-gen: kept as negatives for `calibrate --negatives`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections import deque
from importlib import resources

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from pokemon_classifier import pokedex
from pokemon_classifier.errors import ImageError, UserError


def request_language(request: Request | None, lang: str | None = None) -> str:
    """`?lang=` if we support it, else the best of the request's Accept-Language, else English."""
    header = request.headers.get("accept-language") if request is not None else None
    return pokedex.negotiate_language(lang, header)


def ui_strings() -> dict:
    """static/i18n.json: {tag: {key: text}} for both pages, plus `_meta` (which languages are machine-made)."""
    return json.loads(resources.files("pokemon_classifier").joinpath("static/i18n.json").read_text(encoding="utf-8"))


def localize(result: dict, request: Request | None, lang: str | None = None) -> dict:
    """An image or video verdict with the localized fields added (pokedex.localize_result / localize_video)."""
    if not isinstance(result, dict) or "error" in result:
        return result
    chosen = request_language(request, lang)
    if "overall" in result or "segments" in result:
        return pokedex.localize_video(result, chosen)
    return pokedex.localize_result(result, chosen)


class RateLimit:
    """At most `per_minute` events per client in any 60 s (a sliding window); `clock` for tests."""

    def __init__(self, per_minute: int, clock=time.monotonic, max_clients: int = 10_000):
        self.per_minute, self.clock, self.max_clients = per_minute, clock, max_clients
        self._seen: dict[str, deque] = {}
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """0 and count the event if `client` may go on now, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            q = self._seen.setdefault(client, deque())
            while q and q[0] <= now - 60:
                q.popleft()
            if len(q) >= self.per_minute:
                return q[0] + 60 - now
            q.append(now)
            if len(self._seen) > self.max_clients:  # forget idle clients: memory stays bounded
                for k in [k for k, v in self._seen.items() if not v or v[-1] <= now - 60]:
                    del self._seen[k]
            return 0.0


def fan_router(*, max_upload: int = 10 * 1024 * 1024, artwork_url: str | None = None, collect_dir=None,
               collect_max_mb: float | None = 500, collect_max_files: int | None = 5000,
               collect_per_minute: int | None = None, clock=time.monotonic) -> APIRouter:
    """GET /api/pokedex, GET /api/config, GET /api/ui-strings and POST /api/feedback (404 unless collect_dir
    is given).

    Feedback writes into collect_dir within a budget (collect_max_mb, collect_max_files), at most
    collect_per_minute pictures per client address (None: no limit); the folder is repaired at start
    (collect.Collector.recover), saying so in one line on stderr."""
    router = APIRouter()
    collector = limit = None
    if collect_dir is not None:
        from pokemon_classifier.collect import Collector

        collector = Collector(collect_dir, max_bytes=max_upload, recover=True,
                              budget_bytes=None if collect_max_mb is None else int(collect_max_mb * 1e6),
                              max_files=collect_max_files)
        if collector.repaired:
            print(collector.repaired, file=sys.stderr, flush=True)
        limit = RateLimit(collect_per_minute, clock) if collect_per_minute else None

    @router.get("/api/pokedex")
    def pokedex_list(request: Request, lang: str | None = None):
        chosen = request_language(request, lang)
        return {"lang": chosen, "pokemon": pokedex.pokedex_list(chosen)}

    @router.get("/api/config")
    def config(request: Request, lang: str | None = None):
        return {"lang": request_language(request, lang), "languages": pokedex.LANGUAGES,
                "artwork_url": artwork_url, "collect": collector is not None,
                "max_upload_mb": max_upload / (1024 * 1024)}  # the page shrinks larger photos before sending

    strings = ui_strings()

    @router.get("/api/ui-strings")
    def page_strings(request: Request, lang: str | None = None):
        # one language (negotiated as for /api/pokedex), so the page never downloads all twelve
        chosen = request_language(request, lang)
        return {"lang": chosen, "strings": strings.get(chosen, {})}

    def error(status: int, message: str, **headers) -> JSONResponse:
        if collector is not None:  # answers never show where the server keeps its files
            for where in {str(collector.dir.resolve()), str(collector.dir)}:
                message = message.replace(where + os.sep, "").replace(where, "the collect folder")
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    @router.post("/api/feedback")
    async def feedback(request: Request, file: UploadFile | None = None, dex_id: str | None = Form(None),
                       answer: str | None = Form(None)):
        from pokemon_classifier.collect import NEGATIVE_KINDS, NEGATIVES, AlreadySaved, CollectFull

        if collector is None:
            return error(404, "feedback is off (start the server with --collect DIR)")
        if file is None or (dex_id is None) == (answer is None):
            return error(400, "send multipart fields 'file' and either 'dex_id' (1..151) or 'answer' "
                              f"({', '.join(NEGATIVE_KINDS)})")
        if limit is not None and (wait := limit.wait(request.client.host if request.client else "?")):
            return error(429, f"too many pictures from this address (at most {limit.per_minute} a minute); "
                              f"try again in {math.ceil(wait)} s", **{"Retry-After": str(math.ceil(wait))})
        data = await file.read()  # already held to max_upload by the app's body cap
        if len(data) > max_upload:
            return error(413, f"upload larger than {max_upload // (1024 * 1024)} MB")
        try:
            from starlette.concurrency import run_in_threadpool

            if answer is not None:
                name = await run_in_threadpool(collector.save_negative, data, answer)
            else:
                name = await run_in_threadpool(collector.save, data, dex_id)
        except AlreadySaved as e:
            return error(409, str(e))
        except ImageError as e:
            return error(400, "not a readable image: " + str(e).split(": ", 1)[-1])
        except CollectFull as e:
            return error(413, str(e))
        except UserError as e:
            return error(400, str(e))
        except OSError as e:  # disk full, permissions: say what, not where
            return error(500, f"could not store the picture ({e.strerror or type(e).__name__})")
        if answer is not None:
            return {"saved": f"{NEGATIVES}/images/{name}", "answer": answer.strip(), "kind": NEGATIVE_KINDS[answer.strip()]}
        dex = pokedex.id_from_filename(name)
        return {"saved": f"images/{name}", "dex_id": dex, "name": pokedex.display_name(dex)}

    return router
