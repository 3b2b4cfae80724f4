"""The app: JSON API (limits, errors), a real loopback server under 50 concurrent clients, and a real browser."""

import contextlib
import math
import shutil
import socket
import threading
import time
from pathlib import Path
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import CLASSES, draw_shape, served_app, wait_for
from helpers import png as _png
from pokemon_classifier import pokedex

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_api_predict_health_and_errors(clf, tmp_path, monkeypatch):
    c = TestClient(create_app(clf))
    health = c.get("/api/health").json()
    assert health["classes"] == 151 and health["open_set"] is False and health["open_set_threshold"] is None
    r = c.post("/api/predict", files={"file": ("../../etc/evil.png", _png(), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["topk"]) == 5 and body["name"] == pokedex.display_name(body["dex_id"])
    assert not (tmp_path / "evil.png").exists()
    r = c.post("/api/predict", files={"file": ("x.jpg", b"<html>hi</html>", "image/jpeg")})
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]
    big = b"\xff" * (10 * 1024 * 1024 + 10)
    r = c.post("/api/predict", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413
    assert c.post("/api/predict").status_code in (400, 422)
    assert "getUserMedia" in c.get("/").text


def test_api_video(clf, tmp_path):
    from test_predict import _write_video

    v = tmp_path / "v.mp4"
    _write_video(v, [CLASSES[1], CLASSES[4]])
    c = TestClient(create_app(clf))
    r = c.post("/api/predict_video?fps=2", files={"file": ("v.mp4", v.read_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    assert r.json()["frames"] == 4 and r.json()["segments"]
    import tempfile
    from pathlib import Path

    assert not list(Path(tempfile.gettempdir()).glob("pokemon-upload-*"))  # temp dir cleaned
    r = c.post("/api/predict_video", files={"file": ("v.mp4", b"garbage", "video/mp4")})
    assert r.status_code == 400


@contextlib.contextmanager
def _serve(app):
    """A real uvicorn on a loopback port, in a thread; yields the base URL."""
    with served_app(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(clf):
    app = create_app(clf)
    with _serve(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def server(served):
    return served[1]


def test_fifty_concurrent_clients(server):
    import requests

    data = _png()

    def one(i):
        t = time.perf_counter()
        r = requests.post(f"{server}/api/predict", files={"file": (f"{i}.png", data, "image/png")}, timeout=60)
        return r.status_code, time.perf_counter() - t

    with ThreadPoolExecutor(50) as ex:
        results = list(ex.map(one, range(50)))
    codes = [c for c, _ in results]
    lat = sorted(t for _, t in results)
    print(f"50 concurrent clients: p50 {lat[24] * 1000:.0f} ms, p99 {lat[48] * 1000:.0f} ms")
    assert codes.count(200) == 50


def test_concurrent_requests_share_forward_passes(served):
    """The batcher coalesces: 32 simultaneous requests take fewer forward passes than requests."""
    import requests

    app, url = served
    sizes = app.state.batcher.batch_sizes
    before = len(sizes)
    data = _png()
    go = threading.Barrier(32)

    def one(i):
        go.wait()
        return requests.post(f"{url}/api/predict?k={1 + i % 7}", files={"file": ("x.png", data, "image/png")},
                             timeout=60).json()

    with ThreadPoolExecutor(32) as ex:
        out = list(ex.map(one, range(32)))
    assert [len(r["topk"]) for r in out] == [1 + i % 7 for i in range(32)]  # one k per row survives batching
    new = sizes[before:]
    assert sum(new) == 32 and len(new) < 32 and max(new) > 1


BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
                 "--use-fake-ui-for-media-stream"]


@pytest.fixture
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium") and not __import__("os").path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does this)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        ctx = browser.new_context(viewport={"width": 390, "height": 844})  # phone-sized
        ctx.grant_permissions(["camera"], origin=server)
        pg = ctx.new_page()
        pg.goto(server)
        yield pg
        browser.close()


def test_browser_upload_shows_prediction(page, tmp_path):
    f = tmp_path / "pic.png"
    f.write_bytes(_png("square"))
    page.set_input_files("#file", str(f))
    page.wait_for_selector("#result:not([hidden])", timeout=30000)
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=30000)
    verdict = page.inner_text("#verdict")
    assert "%" in verdict or "Unknown" in verdict
    page.screenshot(path=str(tmp_path / "shot.png"))
    assert (tmp_path / "shot.png").stat().st_size > 1000


def test_browser_webcam_snapshot(page):
    page.click("#camera")
    page.wait_for_function("!document.getElementById('snap').disabled", timeout=15000)
    page.wait_for_function("document.getElementById('cam').videoWidth > 0", timeout=15000)
    page.click("#snap")
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=30000)
    assert page.inner_text("#error") == ""


# ------------------------------------------------------------------ limits and errors
def _video_bytes(tmp_path, seconds=2.0, fps=10, size=64, name="v.mp4") -> bytes:
    """A video of `seconds` s alternating two shapes each second (mpeg4, written with PyAV)."""
    from test_predict import _write_video

    n = max(1, int(math.ceil(seconds)))
    v = tmp_path / name
    _write_video(v, [CLASSES[(1, 4)[i % 2]] for i in range(n)], seconds_each=seconds / n, fps=fps)
    return v.read_bytes()


@pytest.mark.parametrize("query, word", [("fps=nan", "fps"), ("fps=inf", "fps"), ("fps=-1", "fps"),
                                         ("fps=0", "fps"), ("fps=abc", "fps"), ("k=abc", "k")])
def test_bad_query_parameters_are_400_json(clf, tmp_path, query, word):
    c = TestClient(create_app(clf), raise_server_exceptions=False)
    r = c.post(f"/api/predict_video?{query}", files={"file": ("v.mp4", _video_bytes(tmp_path), "video/mp4")})
    assert r.status_code == 400 and set(r.json()) == {"error"}
    assert word in r.json()["error"] and "\n" not in r.json()["error"]
    if word == "k":
        r = c.post(f"/api/predict?{query}", files={"file": ("x.png", _png(), "image/png")})
        assert r.status_code == 400 and r.json()["error"].startswith("k:")


def test_every_error_is_json_without_paths(clf, tmp_path, caplog):
    c = TestClient(create_app(clf), raise_server_exceptions=False)
    checks = [
        (c.get("/nope"), 404),
        (c.get("/api/predict"), 405),
        (c.post("/api/predict", json={"file": "x"}), 415),  # not multipart
        (c.post("/api/predict", files={"other": ("x.png", _png(), "image/png")}), 400),  # wrong field
        (c.post("/api/predict", files={"file": ("x.png", b"", "image/png")}), 400),  # empty
        (c.post("/api/predict_video", files={"file": ("v.mp4", b"garbage" * 100, "video/mp4")}), 400),
    ]
    for r, status in checks:
        assert r.status_code == status, r.text
        body = r.json()
        assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
        assert body["error"].count("not a readable") <= 1
        for leak in ("/tmp", tempfile_dir(), "BytesIO", "upload.bin", "Traceback"):
            assert leak not in body["error"], body
    assert "Traceback" not in caplog.text


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def test_video_limits_are_413(clf, tmp_path):
    data = _video_bytes(tmp_path, seconds=4.0)
    ok = TestClient(create_app(clf)).post("/api/predict_video?fps=2", files={"file": ("v.mp4", data, "video/mp4")})
    assert ok.status_code == 200 and ok.json()["frames"] == 8
    assert set(ok.json()) >= {"frames", "fps", "segments", "overall"}
    short = TestClient(create_app(clf, max_video_seconds=2))
    r = short.post("/api/predict_video", files={"file": ("v.mp4", data, "video/mp4")})
    assert r.status_code == 413 and "limit is 2 s" in r.json()["error"]
    few = TestClient(create_app(clf, max_video_frames=5))
    r = few.post("/api/predict_video?fps=2", files={"file": ("v.mp4", data, "video/mp4")})
    assert r.status_code == 413 and "more than 5 frames" in r.json()["error"]
    assert few.post("/api/predict_video?fps=1", files={"file": ("v.mp4", data, "video/mp4")}).status_code == 200


def test_video_frames_held_to_the_pixel_cap(tmp_path):
    from pokemon_classifier.serving import LimitExceeded, video_frames

    data = _video_bytes(tmp_path, seconds=1.0)  # 64x64 = 4096 px per frame
    assert len(list(video_frames(data, 2.0, 60, 100, max_pixels=4096))) == 2
    frames = video_frames(data, 2.0, 60, 100, max_pixels=4095)
    with pytest.raises(LimitExceeded, match="64x64 px"):
        next(frames)  # refused from the header, before the first frame is decoded


def test_upload_cap_counts_real_bytes(clf):
    c = TestClient(create_app(clf, max_upload=200_000))
    small = c.post("/api/predict", files={"file": ("x.png", _png(), "image/png")})
    assert small.status_code == 200
    r = c.post("/api/predict", files={"file": ("x.png", b"\0" * 300_000, "image/png")})
    assert r.status_code == 413 and r.json() == {"error": "upload larger than 0.190735 MB"}
    # A lying Content-Length over the cap is refused before the body is read.
    r = c.post("/api/predict", content=b"x" * 10, headers={"content-length": "999999999",
                                                           "content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413


def test_chunked_200mb_body_cut_at_the_cap_nothing_spooled(clf, tmp_path, monkeypatch):
    """A real chunked upload to a real server: 413 after about the cap, not after 200 MB, and no temp file."""
    import tempfile

    import httpx

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # the server runs in this process
    sent = 0

    def body():
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        block = b"\xff" * (1 << 20)
        for _ in range(200):
            sent += len(block)
            yield block

    with _serve(create_app(clf)) as url:
        r = httpx.post(f"{url}/api/predict", content=body(), timeout=60,
                       headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["error"] == "upload larger than 10 MB"
    assert sent < 64 * (1 << 20)  # the client stopped long before 200 MB: the server did not read it all
    assert not list(spool.iterdir())


class _SlowClassifier:
    """The tiny classifier with a 40 ms forward pass, like a real model on a small CPU."""

    def __init__(self, clf, delay=0.04):
        self._clf, self._delay = clf, delay
        self.calls = 0
        self.called = threading.Event()  # the first forward pass has begun

    def __getattr__(self, name):
        return getattr(self._clf, name)

    def predict_tensors(self, batch, ks):
        self.calls += 1
        self.called.set()
        time.sleep(self._delay)
        return self._clf.predict_tensors(batch, ks)


def test_server_answers_health_and_images_while_a_long_video_runs(clf, tmp_path):
    """The freeze test: a 30 s video at 10 fps in flight; health and an image are answered meanwhile."""
    import requests

    data = _video_bytes(tmp_path, seconds=30.0, fps=10)
    slow = _SlowClassifier(clf)
    with _serve(create_app(slow)) as url:
        video = ThreadPoolExecutor(1).submit(
            requests.post, f"{url}/api/predict_video?fps=10", files={"file": ("v.mp4", data, "video/mp4")},
            timeout=120)
        wait_for(slow.called, 120, "the video reaching the model")
        health_ms, image = [], None
        while not video.done():
            t = time.perf_counter()
            assert requests.get(f"{url}/api/health", timeout=30).status_code == 200
            health_ms.append((time.perf_counter() - t) * 1000)
            if image is None:
                image = requests.post(f"{url}/api/predict", files={"file": ("x.png", _png(), "image/png")},
                                      timeout=30)
                image_done_during_video = not video.done()
            futures.wait([video], timeout=0.02)  # the next health probe, or on as soon as the video is answered
        r = video.result()
    assert r.status_code == 200 and r.json()["frames"] == 300
    print(f"health during a 30 s video: {len(health_ms)} answers, max {max(health_ms):.0f} ms")
    assert len(health_ms) >= 5  # old code: no answer until the video finished
    assert image.status_code == 200 and image_done_during_video


def test_video_work_stops_when_the_client_goes_away(clf, tmp_path):
    import requests

    data = _video_bytes(tmp_path, seconds=30.0, fps=10)  # 300 frames = 19 chunks of 16
    slow = _SlowClassifier(clf, delay=0.1)
    with _serve(create_app(slow)) as url:
        req = requests.Request("POST", f"{url}/api/predict_video?fps=10",
                               files={"file": ("v.mp4", data, "video/mp4")}).prepare()
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=60) as s:
            s.sendall(f"POST {req.path_url} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: {req.headers['Content-Type']}\r\nContent-Length: {len(req.body)}\r\n\r\n"
                      .encode() + req.body)
            wait_for(slow.called, 120, "the video reaching the model")
        # the client has gone; videos run one at a time, so a second one starts only once the first stopped
        one = requests.post(f"{url}/api/predict_video?fps=1", timeout=120,
                            files={"file": ("w.mp4", _video_bytes(tmp_path, 1.0, name="w.mp4"), "video/mp4")})
    assert one.status_code == 200 and one.json()["frames"] <= 16, one.text  # one chunk: one forward pass
    assert 0 < slow.calls - 1 < 19


def test_batcher_coalesces_caps_and_keeps_rows_apart(clf):
    import torch

    from pokemon_classifier.serving import Batcher

    b = Batcher(clf, max_batch=8, max_wait_ms=300)
    try:
        xs = [clf.preprocess(draw_shape(*CLASSES[(1, 4, 7)[i % 3]])) for i in range(20)]
        with b.incoming():  # more is on its way: the worker waits for full batches
            futs = [b.submit(x[None], [1 + i % 3]) for i, x in enumerate(xs)]
        got = [f.result(30)[0] for f in futs]
        assert sum(b.batch_sizes) == 20 and max(b.batch_sizes) == 8 and len(b.batch_sizes) == 3
        want = clf.predict_tensors(torch.stack(xs), [1 + i % 3 for i in range(20)])
        for g, w in zip(got, want):
            assert g["dex_id"] == w["dex_id"] and len(g["topk"]) == len(w["topk"])
            assert g["probability"] == pytest.approx(w["probability"], abs=1e-5)
        # A multi-row job (a video chunk) is never split across batches.
        futs = [b.submit(torch.stack(xs[:6]), [2] * 6), b.submit(torch.stack(xs[:6]), [2] * 6)]
        assert [len(f.result(30)) for f in futs] == [6, 6] and b.batch_sizes[-2:] == [6, 6]
        # A cancelled request is skipped, not computed.
        n = len(b.batch_sizes)
        f = b.submit(xs[0][None], [1])
        f.cancel()
        assert b.submit(xs[1][None], [1]).result(30) and sum(b.batch_sizes[n:]) == 1
    finally:
        b.close()
    # Nothing announced as incoming: a lone request goes at once instead of waiting out max_wait.
    lone = Batcher(clf, max_batch=8, max_wait_ms=600_000)
    try:
        assert lone.submit(xs[0][None], [1]).result(60)[0]["topk"]
    finally:
        lone.close()


def test_docs_served_locally_no_external_host(clf):
    import re

    c = TestClient(create_app(clf))
    assert c.get("/api/openapi.json").json()["paths"]["/api/predict"]
    for path in ("/", "/api/docs"):
        page = c.get(path)
        assert page.status_code == 200
        assert not re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page.text), path
        assert not re.findall(r"https?://(?!127\.0\.0\.1|localhost)[\w.-]+\.[a-z]{2,}/[\w./-]*\.(?:js|css)", page.text)
        for asset in re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", page.text):
            assert c.get(asset).status_code == 200, asset
    assert "/api/docs/assets/swagger-ui-bundle.js" in c.get("/api/docs").text


def test_serve_port_and_device_options(monkeypatch):
    from helpers import run_cli
    from pokemon_classifier.errors import UserError

    code, out, err = run_cli("serve", "--port", "99999")
    assert code == 2 and err.strip() == "error: --port 99999: not a TCP port (0-65535)"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        code, out, err = run_cli("serve", "--port", str(taken.getsockname()[1]))
        assert code == 2 and err.startswith("error: cannot listen on 127.0.0.1:") and err.count("\n") == 1
    finally:
        taken.close()
    seen = {}

    def fake_load(weights=None, **kw):
        seen.update(kw)
        raise UserError("stop here")

    monkeypatch.setattr(Classifier, "load", staticmethod(fake_load))
    code, out, err = run_cli("serve", "--port", "0", "--device", "cuda:1", "--threads", "1")
    assert code == 2 and seen["device"] == "cuda:1" and seen["threads"] == 1


def test_health_reports_the_open_set_threshold_the_answers_use():
    """The shipped file's unknown answer comes from its open-set score: health says so and gives its threshold."""
    best = Path(__file__).resolve().parents[1] / "best.pt"
    if not best.is_file():
        pytest.skip("no shipped best.pt")
    shipped = Classifier.load(best)
    health = TestClient(create_app(shipped)).get("/api/health").json()
    assert health["open_set"] is True
    assert health["open_set_threshold"] == pytest.approx(float(shipped.meta["openset"]["threshold"]))
