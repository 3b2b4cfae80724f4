"""The page's "Why?" and "Find every Pokémon" toggles in real headless Chromium (one server, one browser):
the overlay image appears, and the boxes drawn over the preview match the API's detections. Skips (with
the reason) where Chromium or Playwright is absent."""

import io
import json
import urllib.request

import numpy as np
import pytest
from PIL import Image

from helpers import chromium, served_app, tiny_checkpoint

pytest.importorskip("fastapi")
pytest.importorskip("playwright.sync_api")

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402

W, H = 320, 200  # not square: the boxes must be scaled per axis


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-explain")
    clf = Classifier.load(tiny_checkpoint(root / "m.pt", 64, unknown_threshold=0.0))
    a = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    a[30:150, 180:300] = (250, 210, 40)
    pic = root / "pic.png"
    Image.fromarray(a).save(pic)
    with served_app(create_app(clf)) as port:
        yield {"url": f"http://127.0.0.1:{port}", "pic": pic, "clf": clf}


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def _open(browser, served, viewport):
    page = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}).new_page()
    page.goto(served["url"])
    page.evaluate("window.pageReady")
    page.set_input_files("#file", str(served["pic"]))
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=20000)
    assert page.is_visible("#why") and page.get_attribute("#why", "aria-pressed") == "false"
    return page


def _detections(served) -> list:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n\r\n").encode() \
        + served["pic"].read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(served["url"] + "/api/predict?multi=1", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["detections"]


def test_why_shows_the_overlay(browser, served):
    page = _open(browser, served, (1280, 800))
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "explain=1" in r.url else None)
    shown = "document.getElementById('why-img').naturalWidth > 0 && !document.getElementById('why-fig').hidden"
    page.click("#why")
    assert page.get_attribute("#why", "aria-pressed") == "true"
    page.wait_for_function(shown, timeout=30000)
    page.set_input_files("#file", str(served["pic"]))  # the next picture, toggle still on: explained too
    page.wait_for_function(f"{shown} && document.querySelectorAll('#bars .bar').length === 5", timeout=30000)
    assert len(asked) == 2
    assert page.evaluate("[document.getElementById('why-img').naturalWidth, document.getElementById('why-img').naturalHeight]") == [W, H]
    assert page.is_hidden("#where-busy") and page.inner_text("#where-error") == ""
    assert "torch" in page.inner_text("#why-cap") and page.get_attribute("#why-img", "alt")
    page.click("#why")  # off again: the overlay goes, without a request
    assert page.is_hidden("#why-fig")
    page.context.close()


def test_find_every_pokemon_draws_the_apis_boxes_on_the_preview(browser, served):
    want = _detections(served)
    page = _open(browser, served, (390, 844))
    page.click("#find-all")
    page.wait_for_function("!document.getElementById('found').hidden", timeout=30000)
    assert page.locator("#found-list li").count() == len(want) > 0
    assert page.locator("#boxes .box").count() == len(want)
    img = page.locator("#preview").bounding_box()
    k = img["width"] / W
    for d, box in zip(want, page.locator("#boxes .box").all()):
        b = box.bounding_box()  # border-box: the drawn box over the picture, scaled to the displayed size
        assert abs(b["x"] - (img["x"] + d["box"][0] * k)) < 2 and abs(b["y"] - (img["y"] + d["box"][1] * k)) < 2
        assert abs(b["width"] - (d["box"][2] - d["box"][0]) * k) < 2
        assert b["x"] + b["width"] <= img["x"] + img["width"] + 1 and b["y"] + b["height"] <= img["y"] + img["height"] + 1
    assert page.get_attribute("#boxes", "aria-hidden") == "true"  # the list above says it for screen readers
    page.context.close()


def test_boxes_follow_a_photo_the_page_shrank_before_sending(browser, served, tmp_path):
    # over the server's upload limit, the page sends the photo shrunk to 2048 px: the boxes come back in
    # the shrunk picture's pixels and must still land on the (full-size) preview
    w, h = 2600, 1300
    x, y = np.linspace(0, 255, w)[None, :, None], np.linspace(0, 255, h)[:, None, None]
    a = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 90)], 2)
    a = a + np.random.default_rng(0).integers(-3, 4, a.shape)  # a PNG of several MB, a JPEG well under 1 MB
    a[300:900, 1500:2300] = (250, 210, 40)
    Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(tmp_path / "big.png")
    with served_app(create_app(served["clf"], max_upload=1024 * 1024)) as port:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(f"http://127.0.0.1:{port}")
        page.evaluate("window.pageReady")
        page.set_input_files("#file", str(tmp_path / "big.png"))
        page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=30000)
        page.click("#find-all")
        page.wait_for_function("!document.getElementById('found').hidden", timeout=30000)
        assert page.evaluate("whereShown.size") == [2048, 1024]
        dets = page.evaluate("whereShown.detections")
        img = page.locator("#preview").bounding_box()
        k = img["width"] / 2048
        for d, box in zip(dets, page.locator("#boxes .box").all()):
            b = box.bounding_box()
            assert abs(b["x"] - (img["x"] + d["box"][0] * k)) < 2 and abs(b["width"] - (d["box"][2] - d["box"][0]) * k) < 2
        page.context.close()
