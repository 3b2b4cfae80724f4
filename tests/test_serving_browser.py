"""Cross-site writes in real headless Chromium (issue 28): a page of another site posts pictures to
`serve --collect` with fetch(..., {mode: 'no-cors'}); nothing may be stored. Skips without Chromium."""

import base64
import io
import os
import shutil

import pytest

from helpers import CLASSES, draw_shape, served_app, tiny_checkpoint

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from fastapi import FastAPI  # noqa: E402
from fastapi.responses import HTMLResponse  # noqa: E402

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

POST = """async ([target, b64, n]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  for (let i = 0; i < n; i++) {
    const fd = new FormData();
    fd.append('file', new Blob([bytes], {type: 'image/png'}), 'x.png');
    fd.append('dex_id', '150');
    await fetch(target + '/api/feedback', {method: 'POST', mode: 'no-cors', body: fd}).catch(() => null);
  }
  return true;
}"""


def test_a_page_of_another_site_cannot_write_into_the_collect_folder(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    clf = Classifier.load(tiny_checkpoint(tmp_path / "m.pt", 64, unknown_threshold=0.0))
    col = tmp_path / "col"
    png = io.BytesIO()
    draw_shape("square", CLASSES[1][1]).save(png, "PNG")
    b64 = base64.b64encode(png.getvalue()).decode()
    evil = FastAPI()

    @evil.get("/", response_class=HTMLResponse)
    def page():
        return "<!doctype html><title>evil</title><p>nothing to see</p>"

    with served_app(create_app(clf, collect_dir=col)) as port, served_app(evil) as evil_port, \
            sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            tab = b.new_page()
            tab.goto(f"http://localhost:{evil_port}/")  # another site: localhost vs 127.0.0.1
            assert tab.evaluate(POST, [f"http://127.0.0.1:{port}", b64, 5])
            stored = sorted(p.name for p in (col / "images").iterdir())
            # the app's own page still may
            tab.goto(f"http://127.0.0.1:{port}/")
            assert tab.evaluate(POST, [f"http://127.0.0.1:{port}", b64, 1])
        finally:
            b.close()
    assert stored == []
    assert sorted(p.name for p in (col / "images").iterdir()) == ["mewtwo001.png"]
