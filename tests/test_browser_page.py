"""The page's fan-facing details in real headless Chromium (issue 26): the live verdict on the video on a
phone, a clip's timeline strip, big phone photos shrunk in the browser, touch wording, dark mode, the
browser-only history, Share and the user's own picture in the card. One server (a colour oracle, so the
verdicts are known) and one browser for the module; skips where Chromium or Playwright is absent."""

import io

import numpy as np
import pytest
from PIL import Image

from helpers import chromium, fake_video_answer, open_page, served_app

pytest.importorskip("fastapi")
pytest.importorskip("playwright.sync_api")

from test_video import COLOURS, _oracle, _write_clip  # noqa: E402  (the clip tests' colour oracle and clips)

from pokemon_classifier.app import create_app  # noqa: E402


def _picture(colour, size=(96, 80), fmt="PNG") -> bytes:
    b = io.BytesIO()
    Image.new("RGB", size, colour).save(b, fmt)
    return b.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    pika = root / "pikachu.png"
    pika.write_bytes(_picture(COLOURS[25]))
    with served_app(create_app(_oracle())) as port:
        yield {"url": f"http://127.0.0.1:{port}", "root": root, "pika": pika}


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


_open = open_page  # the page opened in a new context (helpers.open_page)


def _verdict(page, path):
    page.set_input_files("#file", str(path))
    page.wait_for_function("!document.getElementById('result').hidden && document.getElementById('verdict').textContent",
                           timeout=20000)


def _inside(box, outer):
    return (box["x"] >= outer["x"] - 1 and box["y"] >= outer["y"] - 1 and box["x"] + box["width"] <= outer["x"] + outer["width"] + 1
            and box["y"] + box["height"] <= outer["y"] + outer["height"] + 1)


def test_live_verdict_is_on_the_video_in_view_on_a_phone(browser, served):
    page = _open(browser, served, viewport=(390, 844))
    page.click("#camera")
    page.wait_for_function("document.getElementById('cam').videoWidth > 0", timeout=15000)
    page.click("#live")
    page.wait_for_function("!document.getElementById('live-verdict').hidden && window.liveRequests >= 2", timeout=15000)
    said = page.inner_text("#live-verdict")
    assert said == "Unknown" or said.endswith("%"), said  # the fake camera's test pattern is none of the oracle's colours
    box, video = page.locator("#live-verdict").bounding_box(), page.locator("#cam").bounding_box()
    assert _inside(box, {"x": 0, "y": 0, "width": 390, "height": 844}), box  # no scrolling needed
    assert _inside(box, video) and box["y"] + box["height"] > video["y"] + video["height"] / 2, (box, video)
    colours = page.eval_on_selector("#live-verdict", "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]")
    assert colours == ["rgb(255, 255, 255)", "rgba(0, 0, 0, 0.78)"]  # white on near-black: >= 9:1 on any picture
    assert page.get_attribute("#announce", "aria-live") == "polite" and page.inner_text("#announce")
    page.click("#live")  # pause: the overlay goes with the live verdicts
    assert page.is_hidden("#live-verdict")
    page.screenshot(path=str(served["root"] / "live-phone.png"))
    page.context.close()


def test_a_clip_of_two_pokemon_is_a_timeline_strip(browser, served):
    black = (0, 0, 0)
    clip = _write_clip(served["root"] / "two.mp4", [(black, 1), (COLOURS[25], 2), (COLOURS[6], 2)])
    page = _open(browser, served)
    page.set_input_files("#video", str(clip))
    page.wait_for_function("document.querySelectorAll('.strip li').length >= 3", timeout=20000)
    segs = page.eval_on_selector_all(".strip li", "ls => ls.map(l => [l.className, l.getAttribute('aria-label'), "
                                                  "l.textContent, l.getBoundingClientRect().width])")
    strip = page.locator(".strip").bounding_box()["width"]
    assert [(c, label, text) for c, label, text, _ in segs] == [
        ("none", "not sure 0–1 s", ""), ("", "Pikachu 1–3 s", "Pikachu"), ("", "Charizard 3–5 s", "Charizard")]
    assert [round(w / strip, 2) for *_, w in segs] == [0.2, 0.4, 0.4]  # widths are the clip's seconds
    assert page.get_attribute(".strip li:nth-child(2)", "title") == "Pikachu 1–3 s"
    assert page.inner_text("#headline") == "Pikachu 1–3 s, Charizard 3–5 s"
    assert page.inner_text("#verdict") == "Pikachu → Charizard"
    seen = page.locator("ul.seen li").all_inner_texts()
    assert len(seen) == 2 and seen[0].startswith("Pikachu #025") and seen[1].startswith("Charizard #006")
    # the mean-of-frames guesses, the frame table and the note are one disclosure, closed
    assert page.is_hidden("#bars") and page.is_hidden("#vtables") and page.is_hidden("#note")
    page.click("#vdetails summary")
    assert "1.0–3.0 s" in page.inner_text("#vtables") and page.inner_text("#note").startswith("10 frames at 2 fps")
    page.context.close()


def test_a_photo_over_the_upload_limit_is_shrunk_upright_and_classified(browser, served):
    # 12 MB of noise, stored landscape with EXIF "rotate 90°" (how phones save portrait photos)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1200, 2600, 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6
    big = served["root"] / "phone.jpg"
    img.save(big, "JPEG", quality=100, subsampling=0, exif=exif.tobytes())
    assert big.stat().st_size > 10 * 1024 * 1024
    page = _open(browser, served, viewport=(390, 844))
    sent = []

    def spy(route):
        sent.append(route.request.post_data_buffer)
        route.continue_()

    page.route("**/api/predict*", spy)
    _verdict(page, big)
    assert page.inner_text("#error") == ""
    assert page.inner_text("#verdict").startswith("Unknown")  # a verdict, not "upload larger than 10 MB"
    body = sent[0]
    pic = Image.open(io.BytesIO(body[body.index(b"\xff\xd8"):]))
    assert pic.format == "JPEG" and pic.size == (945, 2048)  # upright, 2048 px on the long side
    assert len(body) < 2 * 1024 * 1024
    page.context.close()


def test_an_unshrinkable_big_file_says_what_to_do(browser, served):
    junk = served["root"] / "junk.png"
    junk.write_bytes(b"\0" * (11 * 1024 * 1024))  # not a picture any browser can draw
    page = _open(browser, served)
    page.set_input_files("#file", str(junk))
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=10000)
    assert page.inner_text("#error") == "This file is too big (11 MB) and could not be shrunk: try a smaller picture."
    assert page.is_hidden("#busy")
    clip = served["root"] / "long.mp4"
    clip.write_bytes(b"\0" * (12 * 1024 * 1024))  # a video cannot be shrunk here: it is refused before sending
    page.set_input_files("#video", str(clip))
    page.wait_for_function("document.getElementById('error').textContent.includes('video')", timeout=10000)
    assert page.inner_text("#error") == "This video is too big (12 MB; the limit is 10 MB): send a shorter clip."
    page.context.close()


def test_touch_screens_are_told_to_tap(browser, served):
    page = _open(browser, served, viewport=(390, 844), has_touch=True, is_mobile=True)
    assert page.evaluate("matchMedia('(pointer: coarse)').matches")
    assert page.inner_text("#drop") == "Tap to choose a picture"
    page.select_option("#lang", "de")  # a language switch keeps the touch wording (English until translated)
    page.wait_for_function("document.documentElement.lang === 'de'")
    assert "Enter" not in page.inner_text("#drop")
    page.context.close()
    page = _open(browser, served)
    assert "press Enter" in page.inner_text("#drop")
    page.context.close()


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_dark_and_light_pages_are_axe_clean_with_history_and_timeline(browser, served, scheme):
    from axe_playwright_python.sync_playwright import Axe

    page = _open(browser, served, color_scheme=scheme)
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == ("rgb(18, 18, 18)" if scheme == "dark" else "rgb(246, 246, 244)")
    _verdict(page, served["pika"])
    clip = _write_clip(served["root"] / "axe.mp4", [(COLOURS[25], 1.5), ((0, 0, 0), 1)])
    page.set_input_files("#video", str(clip))
    page.wait_for_function("document.querySelectorAll('.strip li').length >= 2", timeout=20000)
    page.click("#vdetails summary")
    page.wait_for_function("document.querySelectorAll('#history-list li').length === 2")
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in Axe().run(page).response["violations"]
           if v["impact"] in ("serious", "critical")]
    assert bad == []
    page.context.close()


def test_history_keeps_the_last_verdicts_across_a_reload_and_clears(browser, served):
    page = _open(browser, served)
    assert page.is_hidden("#history")
    _verdict(page, served["pika"])
    page.wait_for_function("document.querySelectorAll('#history-list li').length === 1")
    entry = page.inner_text("#history-list li")
    assert entry.startswith("Pikachu · ") and "%" in entry
    assert page.get_attribute("#history-list img", "src").startswith("data:image/jpeg")
    page.evaluate("""() => { const h = JSON.parse(localStorage.getItem('history'));
      localStorage.setItem('history', JSON.stringify(Array(12).fill(h[0]))); }""")
    page.reload()
    page.evaluate("window.pageReady")
    assert page.is_visible("#history") and page.locator("#history-list li").count() == 12  # as stored ...
    _verdict(page, served["pika"])
    page.wait_for_function("document.getElementById('history-list').textContent.includes('Pikachu')")
    assert page.evaluate("JSON.parse(localStorage.getItem('history')).length") == 10  # ... the next one keeps 10
    assert page.locator("#history-list li").count() == 10
    page.click("#history-clear")
    assert page.is_hidden("#history") and page.evaluate("localStorage.getItem('history')") is None
    page.context.close()


def test_the_card_shows_the_users_own_picture_and_share_only_where_it_exists(browser, served):
    page = _open(browser, served)
    _verdict(page, served["pika"])
    page.wait_for_function("!document.getElementById('own').hidden && document.getElementById('own').naturalWidth > 0")
    own = page.eval_on_selector("#own", "e => [e.src, getComputedStyle(e).objectFit, e.getBoundingClientRect().width, "
                                        "e.getBoundingClientRect().height]")
    assert own[0].startswith("blob:") and own[1] == "cover" and own[2] == own[3] > 0  # a square crop
    assert page.is_hidden("#art")  # no --artwork-url: no artwork
    assert page.is_hidden("#share") == (not page.evaluate("typeof navigator.share === 'function'"))
    page.context.close()
    ctx = browser.new_context(locale="en-US")
    ctx.add_init_script("navigator.share = (d) => { window.shared = d; return Promise.resolve(); };")
    page = ctx.new_page()
    page.goto(served["url"])
    page.evaluate("window.pageReady")
    _verdict(page, served["pika"])
    page.click("#share")
    shared = page.evaluate("window.shared")
    assert shared["text"].startswith("Pokémon classifier: Pikachu ") and shared["text"].endswith("%")
    ctx.close()


def test_a_clip_shows_a_still_of_itself_in_the_card_and_the_history(browser, served):
    av = pytest.importorskip("av")
    clip = served["root"] / "pika.webm"  # VP8: a format every Chromium plays (its mpeg4 clips it cannot)
    with av.open(str(clip), "w") as c:
        s = c.add_stream("libvpx", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for colour, n in (((0, 0, 0), 10), (COLOURS[25], 20)):
            for _ in range(n):
                for pkt in s.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), colour, np.uint8), format="rgb24")):
                    c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    page = _open(browser, served)
    page.set_input_files("#video", str(clip))
    page.wait_for_function("document.querySelectorAll('#history-list li').length === 1", timeout=20000)
    assert page.inner_text("#verdict").startswith("Pikachu")
    # the still is taken where Pikachu is seen (1-3 s), not the black first second
    pixel = page.evaluate("""() => { const i = document.getElementById('own'), c = document.createElement('canvas');
      c.width = c.height = 1; c.getContext('2d').drawImage(i, 0, 0, 1, 1); return [...c.getContext('2d').getImageData(0, 0, 1, 1).data]; }""")
    assert page.is_visible("#own") and all(abs(a - b) < 40 for a, b in zip(pixel, COLOURS[25])), pixel
    assert page.get_attribute("#history-list img", "src").startswith("data:image/jpeg")
    assert page.inner_text("#history-list li").startswith("Video: Pikachu")
    page.context.close()


def test_the_favicon_is_an_inline_picture(browser, served):
    page = _open(browser, served)
    href = page.get_attribute("link[rel=icon]", "href")
    assert href.startswith("data:image/svg+xml,")  # nothing to fetch: no 404 for /favicon.ico, works offline
    assert page.evaluate("""h => new Promise(ok => { const i = new Image(); i.onload = () => ok(i.naturalWidth);
                                                     i.onerror = () => ok(0); i.src = h; })""", href) > 0
    page.context.close()


def test_an_older_answer_without_pokemon_still_shows(browser, served):
    """A server before the story fields (`pokemon`): the mean verdict and its guesses, as before."""
    body = {"frames": 4, "fps": 2.0, "lang": "en", "overall": {"dex_id": 25, "name": "Pikachu", "display_name": "Pikachu",
            "probability": 0.6, "unknown": False, "topk": [{"dex_id": 25, "name": "Pikachu", "display_name": "Pikachu",
                                                            "probability": 0.6}]}}
    page = _open(browser, served)
    fake_video_answer(page, served, body, "old.mp4")
    page.wait_for_function("!document.getElementById('result').hidden")
    assert "Pikachu" in page.inner_text("#verdict") and page.locator("#bars .bar").count() == 1
    page.context.close()
