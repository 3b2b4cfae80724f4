"""`serve`'s on-device mode: /device/ serves the static site of the served model (web.served_site), the
page at / links to it and it links back; in Chromium the switch leads to a page that classifies on the
device with the same top-1 as POST /api/predict. Browser tests skip where Chromium is absent."""

import io
import json
import urllib.request

import pytest

from helpers import CLASSES, chromium, draw_shape, served_app, tiny_checkpoint
from pokemon_classifier import web


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from pokemon_classifier.app import create_app
    from pokemon_classifier.predict import Classifier

    weights = tiny_checkpoint(tmp_path_factory.mktemp("m") / "m.pt", 64, unknown_threshold=0.0)
    site = web.served_site(weights)
    assert web.served_site(weights) == site  # built once: the second start finds it
    with served_app(create_app(Classifier.load(weights), device_site=site)) as port:
        yield f"http://127.0.0.1:{port}/"


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


def test_device_serves_the_site_and_its_model(server):
    status, page = _get(server + "device/")
    assert status == 200 and b'id="server-mode"' in page
    assert _get(server + "device/model.onnx")[1][:2] != b""
    cfg = json.loads(_get(server + "device/pokedex-site.json")[1])
    assert cfg["server"] == "../" and cfg["weights"] == "fp32"
    assert b'href="device/"' in _get(server)[1]


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def test_switch_leads_to_on_device_mode_with_the_servers_answer(browser, server, tmp_path):
    png = io.BytesIO()
    draw_shape("square", CLASSES[4][1]).save(png, "PNG")
    pic = tmp_path / "square.png"
    pic.write_bytes(png.getvalue())
    req = urllib.request.Request(server + "api/predict", method="POST", headers={
        "Content-Type": "multipart/form-data; boundary=b"}, data=b"--b\r\nContent-Disposition: form-data; "
        b'name="file"; filename="square.png"\r\nContent-Type: image/png\r\n\r\n' + png.getvalue() + b"\r\n--b--\r\n")
    with urllib.request.urlopen(req, timeout=30) as r:
        want = json.loads(r.read())

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.click("#device-mode")  # shown once the server answers for /device/, with the page's language
    page.wait_for_url(server + "device/?lang=en")
    page.evaluate("window.pokedex.ready")
    page.set_input_files("#file", str(pic))
    page.wait_for_function("window.pokedex.last !== null", timeout=30000)
    got = page.evaluate("window.pokedex.last.topk[0].dex_id")
    assert got == want["topk"][0]["dex_id"]
    page.evaluate("window.pokedex.offlineReady")  # its service worker is registered for /device/ only:
    assert page.evaluate("navigator.serviceWorker.getRegistration('/').then(r => r ? r.scope : null)") is None
    page.click("#server-mode")
    page.wait_for_url(server)
    page.evaluate("window.pageReady")
    page.select_option("#lang", "ja")  # a language chosen on the server's page carries over
    page.wait_for_function("document.documentElement.lang === 'ja'")
    page.click("#device-mode")
    page.wait_for_url(server + "device/?lang=ja")
    page.evaluate("window.pokedex.ready")
    assert page.evaluate("document.documentElement.lang") == "ja" and page.input_value("#lang") == "ja"
    assert not errors, errors
    page.close()


def test_serve_builds_the_device_site_in_the_background_once_it_starts(tmp_path):
    """serve's DeviceSite: nothing built before the server starts (serve starts at once), then a thread
    builds the site (bounded wait) and /device/ serves it."""
    pytest.importorskip("onnxruntime")
    import threading

    from pokemon_classifier.app import DeviceSite, create_app
    from pokemon_classifier.predict import Classifier

    weights = tiny_checkpoint(tmp_path / "m.pt", 64)
    site = DeviceSite(weights)
    app = create_app(Classifier.load(weights), device_site=site)
    assert site.static is None and not site.started
    with served_app(app) as port:
        assert site.started
        for t in [t for t in threading.enumerate() if t.name == "device-site"]:
            t.join(120)
        assert site.static is not None, "the device site was not built within 120 s"
        status, body = _get(f"http://127.0.0.1:{port}/device/pokedex-site.json")
        assert status == 200 and json.loads(body)["server"] == "../"
