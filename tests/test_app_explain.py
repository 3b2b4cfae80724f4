"""POST /api/predict?explain=1 and ?multi=1 (where.py) on one real loopback server: the overlay PNG and its
peak, the boxes, the errors, and the server answering other requests while an explanation runs."""

import base64
import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from helpers import served_app, wait_for

pytest.importorskip("fastapi")

from pokemon_classifier import pokedex, where  # noqa: E402
from pokemon_classifier.app import create_app  # noqa: E402

W, H = 160, 96  # not square: x and y must not be swapped or squeezed


def picture(w: int = W, h: int = H) -> bytes:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    a[20:70, 90:150] = (250, 210, 40)
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


def post(url: str, data: bytes, query: str):
    """(status, JSON body) of a multipart POST to /api/predict?query."""
    boundary = "x-boundary-x"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}/api/predict?{query}", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(clf):
    with served_app(create_app(clf)) as port:
        yield f"http://127.0.0.1:{port}"


def test_explain_gives_png_and_peak_inside_the_picture(server):
    status, r = post(server, picture(), "explain=1")
    assert status == 200, r
    ex = r["explain"]
    assert ex["backend"] == "torch" and ex["dex_id"] == r["topk"][0]["dex_id"]
    png = Image.open(io.BytesIO(base64.b64decode(ex["png"])))
    assert png.format == "PNG" and png.size == (W, H)  # small pictures are drawn at their own size
    x, y = ex["peak"]
    assert 0 <= x < W and 0 <= y < H
    assert "detections" not in r and r["name"]  # the usual verdict is still there


def test_multi_gives_localized_boxes_inside_the_picture(server):
    status, r = post(server, picture(), "multi=1&lang=de")
    assert status == 200, r
    assert r["detections"], "the tiny model never says unknown: at least the whole picture is one detection"
    for d in r["detections"]:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H, d
        assert d["display_name"] == pokedex.facts(d["dex_id"], "de")["display_name"] and 0 <= d["probability"] <= 1
    assert [d["probability"] for d in r["detections"]] == sorted((d["probability"] for d in r["detections"]),
                                                                 reverse=True)
    assert "explain" not in r


@pytest.mark.parametrize("query", ["explain=abc", "multi=maybe"])
def test_bad_values_are_one_line_errors(server, query):
    status, r = post(server, picture(), query)
    assert status == 400 and set(r) == {"error"}
    assert query.split("=")[0] in r["error"] and "\n" not in r["error"]


def test_onnx_only_server_says_it_needs_the_checkpoint(clf, tmp_path):
    from fastapi.testclient import TestClient

    onnx_only = clf.with_meta()
    onnx_only.weights = tmp_path / "model.onnx"
    r = TestClient(create_app(onnx_only)).post("/api/predict?explain=1", files={"file": ("p.png", picture())})
    assert r.status_code == 501 and "torch checkpoint" in r.json()["error"] and "\n" not in r.json()["error"]


def test_health_and_predict_answer_while_an_explanation_runs(server, monkeypatch):
    entered, release, done = threading.Event(), threading.Event(), {}
    real = where.Where.compute

    def held(self, *a, **kw):
        entered.set()
        release.wait(60)  # held until the other requests have been answered
        return real(self, *a, **kw)

    monkeypatch.setattr(where.Where, "compute", held)
    t = threading.Thread(target=lambda: done.update(answer=post(server, picture(), "explain=1")), daemon=True)
    t.start()
    try:
        wait_for(entered, 60, "the explanation starting")
        with urllib.request.urlopen(f"{server}/api/health", timeout=30) as h:
            assert h.status == 200 and json.loads(h.read())["status"] == "ok"
        status, r = post(server, picture(), "")
        assert status == 200 and "explain" not in r
    finally:
        release.set()
        t.join(60)
    assert done["answer"][0] == 200 and "explain" in done["answer"][1]


def test_too_many_waiting_get_busy(clf):
    import asyncio

    full = where.Where(clf, batcher=None, max_pending=0)
    with pytest.raises(where.Busy, match="try again"):
        asyncio.run(full.run(picture(), {}, True, False))
    full.close()
