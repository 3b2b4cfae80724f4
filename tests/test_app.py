"""The app: JSON API (limits, errors), a real loopback server under 50 concurrent clients, and a real browser."""

import io
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import CLASSES, draw_shape, tiny_checkpoint
from pokemon_classifier import pokedex

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    return Classifier.load(tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.pt", 64, unknown_threshold=0.0))


def _png(shape="circle") -> bytes:
    b = io.BytesIO()
    draw_shape(shape, CLASSES[1][1]).save(b, "PNG")
    return b.getvalue()


def test_api_predict_health_and_errors(clf, tmp_path, monkeypatch):
    c = TestClient(create_app(clf))
    assert c.get("/api/health").json()["classes"] == 151
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


@pytest.fixture(scope="module")
def server(clf):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(create_app(clf), host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


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
