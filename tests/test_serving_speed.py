"""`serve` near the model's own ceiling (issue 27): the video queue is fair between clients, large
uploads are decoded at a reduced scale, and the app's picture decoding is the model's preprocessing."""

import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from helpers import CLASSES, draw_shape, served_app, tiny_checkpoint

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402
from pokemon_classifier.serving import FairTurns  # noqa: E402


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    return Classifier.load(tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.pt", 64, unknown_threshold=0.0))


def test_turns_are_shared_fairly_between_clients():
    """Client a has two clips taking turns, b one clip arriving later: b gets every other turn (a's two
    clips share a's), so its 2 chunks are done after 4 turns, not after a's 8."""
    order = []

    async def main():
        turns, go = FairTurns(), asyncio.Event()

        async def clip(client, name, chunks, hold=None):
            for i in range(chunks):
                async with turns.turn(client):
                    order.append(f"{name}{i}")
                    if hold is not None and i == 0:
                        await hold.wait()  # x0 holds the decoder until everyone is queued
                    await asyncio.sleep(0)

        a1 = asyncio.create_task(clip("a", "x", 4, go))
        await asyncio.sleep(0)
        a2 = asyncio.create_task(clip("a", "y", 4))
        await asyncio.sleep(0)
        b = asyncio.create_task(clip("b", "b", 2))
        await asyncio.sleep(0)
        go.set()
        await asyncio.wait_for(asyncio.gather(a1, a2, b), 10)

    asyncio.run(main())
    assert order[:4] == ["x0", "b0", "y0", "b1"]
    assert [o for o in order if o[0] == "x"] == ["x0", "x1", "x2", "x3"]  # first come first served within a clip


def test_a_cancelled_waiter_passes_its_turn_on():
    async def main():
        turns = FairTurns()
        got = []
        async with turns.turn("a"):
            waiter = asyncio.create_task(_take(turns, "b", got))
            other = asyncio.create_task(_take(turns, "c", got))
            await asyncio.sleep(0)
            waiter.cancel()
        await asyncio.wait_for(other, 10)
        return got

    async def _take(turns, client, got):
        async with turns.turn(client):
            got.append(client)

    assert asyncio.run(main()) == ["c"]


class _Slow:
    """The tiny classifier with a 40 ms forward pass, like a real model on a small CPU."""

    def __init__(self, clf, delay=0.04):
        self._clf, self._delay = clf, delay

    def __getattr__(self, name):
        return getattr(self._clf, name)

    def predict_tensors(self, batch, ks):
        time.sleep(self._delay)
        return self._clf.predict_tensors(batch, ks)


def test_a_second_clients_short_clip_finishes_before_a_long_first_clip(clf, tmp_path):
    """Old code: one video at a time, so a 1 s clip sent after a 30 s one waited for all 19 of its chunks."""
    import httpx

    from test_app import _video_bytes

    long, short = _video_bytes(tmp_path, seconds=30.0, fps=10), _video_bytes(tmp_path, seconds=1.0, name="s.mp4")
    slow = _Slow(clf)

    def post(url, data, source):
        with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=120) as c:
            r = c.post(f"{url}/api/predict_video?fps=10", files={"file": ("v.mp4", data, "video/mp4")})
        return r, time.monotonic()

    app = create_app(slow)
    with served_app(app) as port, ThreadPoolExecutor(2) as ex:
        url = f"http://127.0.0.1:{port}"
        first = ex.submit(post, url, long, "127.0.0.1")
        deadline = time.monotonic() + 60
        while not app.state.batcher.batch_sizes and time.monotonic() < deadline:  # the long clip is under way
            time.sleep(0.01)
        second = ex.submit(post, url, short, "127.0.0.2")
        (r2, done2), (r1, done1) = second.result(), first.result()
    assert r1.status_code == 200 and r1.json()["frames"] == 300
    assert r2.status_code == 200 and r2.json()["frames"] == 10
    assert done2 < done1


def test_the_app_decodes_large_jpegs_at_a_reduced_scale_with_the_same_verdict(clf, monkeypatch):
    """A 2000x1500 JPEG for a model that needs 73 px: the app asks the decoder for >= 73 px, and
    the answer is the one the full decode gives."""
    from pokemon_classifier import app as app_module

    sizes = []
    real = app_module.load_image

    def spy(data, **kw):
        im = real(data, **kw)
        sizes.append(im.size)
        return im

    monkeypatch.setattr(app_module, "load_image", spy)
    shape, colour = CLASSES[4]
    b = io.BytesIO()
    draw_shape(shape, colour, 1500).resize((2000, 1500)).save(b, "JPEG", quality=92)
    r = TestClient(create_app(clf)).post("/api/predict", files={"file": ("x.jpg", b.getvalue(), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert sizes == [(250, 188)]  # 1/8 scale: shorter side 188 >= 73
    full = clf.predict(Image.open(io.BytesIO(b.getvalue())).convert("RGB"))
    assert r.json()["topk"][0]["dex_id"] == full["topk"][0]["dex_id"]


def test_the_app_decodes_normal_pictures_exactly_as_predict(clf):
    """A 320x240 upload (shorter side < 2 x the model's 73 px): same probabilities as clf.predict."""
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(b, "JPEG")
    r = TestClient(create_app(clf)).post("/api/predict?k=5", files={"file": ("x.jpg", b.getvalue(), "image/jpeg")})
    want = clf.predict(b.getvalue())
    assert [t["probability"] for t in r.json()["topk"]] == [t["probability"] for t in want["topk"]]
