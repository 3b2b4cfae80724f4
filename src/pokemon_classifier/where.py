"""The app's "Why?" and "Find every Pokémon": `POST /api/predict?explain=1` and `?multi=1` (used by app.py).

    curl -F file=@team.jpg 'http://127.0.0.1:7860/api/predict?explain=1&multi=1'
    # the usual verdict plus "explain": {"peak": [x, y], "png": "<base64>", "backend": "torch", "dex_id": 25}
    #                  and "detections": [{"dex_id", "name", "display_name", ..., "probability", "box"}]

Both need the torch model (Grad-CAM needs gradients; the detector reads the per-cell evidence of the
last convolutional stage), while the server may classify with ONNX Runtime: the torch model of the same
checkpoint (Classifier.weights) is loaded on the first such request, once, under a lock. The work runs
on one thread of its own, one request at a time (the others wait on the event loop, at most
MAX_PENDING in all, then 503), so `GET /api/health` and ordinary `/api/predict` requests never wait
for it; the detector's crops are classified by the served classifier through the server's batcher
(serving.Batcher), one batch at a time, so an image request waits at most one batch behind them.
Coordinates are in the upright uploaded picture's pixels (EXIF orientation applied), as the CLI's.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from pokemon_classifier import pokedex
from pokemon_classifier.errors import ImageError, UserError

MAX_PENDING = 8  # requests running or waiting for the explain/multi thread; more get 503
PNG_MAX_SIDE = 768  # the overlay travels as base64 in JSON: the page shows it at most card-wide


class Unavailable(Exception):
    """This server cannot compute it (an ONNX-only --weights): 501."""


class Busy(Exception):
    """Too many explain/multi requests already waiting: 503."""


class Queued:
    """The served Classifier, but `predict_tensors` goes through the server's batcher, one batch at a
    time (called from the explain/multi thread: it blocks that thread, never the event loop)."""

    def __init__(self, clf, batcher):
        self._clf, self._batcher = clf, batcher

    def __getattr__(self, name):
        return getattr(self._clf, name)

    def predict_tensors(self, batch: torch.Tensor, topk: int | list[int] = 5) -> list[dict]:
        ks = [topk] * len(batch) if isinstance(topk, int) else list(topk)
        step, out = self._batcher.max_batch, []
        for i in range(0, len(batch), step):
            out += self._batcher.submit(batch[i:i + step], ks[i:i + step]).result()
        return out


class Where:
    """The lazily loaded torch model and the one thread that explains and detects."""

    def __init__(self, clf, batcher, max_pending: int = MAX_PENDING):
        self.clf, self.batcher, self.max_pending = clf, batcher, max_pending
        self.pending = 0  # requests running or waiting (read and written on the event loop only)
        self._model = None
        self._explainer = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="where")  # one at a time: bounds CPU and memory
        self._turn: asyncio.Semaphore | None = None  # made inside the server's loop on first use

    def model(self):
        """(torch model, checkpoint meta) of the served checkpoint, loaded on first use, once."""
        with self._lock:
            if self._model is None:
                weights = getattr(self.clf, "weights", None)
                if weights is None or Path(weights).suffix == ".onnx":
                    raise Unavailable(f"{Path(str(weights)).name if weights else 'this model'}: explanations and "
                                      "boxes need the torch checkpoint (.pt); serve --weights a .pt file")
                from pokemon_classifier.models import load_checkpoint

                self._model = load_checkpoint(weights, self.clf.device)
            return self._model

    def compute(self, data: bytes, result: dict, explain: bool, multi: bool) -> dict:
        """On the where thread: the upload (full resolution, upright) -> {"explain": ..., "detections": ...}."""
        from pokemon_classifier.images import load_image

        model, meta = self.model()
        img = load_image(data)
        out = {}
        if explain:
            from pokemon_classifier.explain import Explainer, overlay

            if self._explainer is None:  # only this one thread explains: built once, reused
                self._explainer = Explainer(model, meta, self.clf.device)
            ex = self._explainer
            dex_id = result["topk"][0]["dex_id"]  # the answer's top guess, even when it is 'unknown'
            e = ex.explain(img, self.clf.class_ids.index(dex_id))
            buf = io.BytesIO()
            overlay(e["image"], e["heat"], ex.pre, e["peak"], max_side=PNG_MAX_SIDE).save(buf, format="PNG")
            out["explain"] = {"peak": [int(v) for v in e["peak"]], "dex_id": dex_id, "backend": "torch",
                              "png": base64.b64encode(buf.getvalue()).decode("ascii")}
        if multi:
            from pokemon_classifier.multi import Detector

            out["detections"] = Detector(Queued(self.clf, self.batcher), model).detect(img, whole=result)
        return out

    async def run(self, data: bytes, result: dict, explain: bool, multi: bool, gone=None) -> dict | None:
        """compute() on the where thread, after the requests before it; None when `gone()` says the client
        left while it waited. Raises Busy when MAX_PENDING requests are already in."""
        if self.pending >= self.max_pending:
            raise Busy(f"{self.pending} explanation/box requests are already running or waiting; try again "
                       "in a few seconds")
        if self._turn is None:
            self._turn = asyncio.Semaphore(1)
        self.pending += 1
        try:
            async with self._turn:
                if gone is not None and await gone():
                    return None
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._pool, self.compute, data, result, explain, multi)
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def localize_detections(detections: list[dict], lang: str) -> list[dict]:
    """Each detection with the localized facts (display_name, english_name, genus, types) as other results."""
    return [{**d, **pokedex.facts(d["dex_id"], lang)} for d in detections]


async def answer(where: Where, request, data: bytes, result: dict, explain: bool, multi: bool,
                 lang: str | None) -> dict | tuple[int, str]:
    """The keys /api/predict's answer gains, or (status, one-line error)."""
    from pokemon_classifier.fans import request_language

    try:
        extra = await where.run(data, result, explain, multi, gone=request.is_disconnected)
    except (Unavailable, UserError) as e:  # e.g. an architecture with no known last convolutional stage
        return 501, str(e)
    except Busy as e:
        return 503, str(e)
    except ImageError as e:
        return 400, "not a readable image: " + str(e).split(": ", 1)[-1]
    if extra is None:
        return 400, "client went away"
    if "detections" in extra:
        extra["detections"] = localize_detections(extra["detections"], request_language(request, lang))
    return extra
