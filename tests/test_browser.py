"""The page in real headless Chromium: language switch, keyboard-only use, axe-core, live camera, corrections,
busy state, artwork fallback and the phone viewport. Skips (with the reason) where Chromium or Playwright is absent."""

import io
import time

import pytest

from helpers import chromium, CLASSES, draw_shape, fake_video_answer, open_page, served_app, tiny_checkpoint
from pokemon_classifier import annotations, pokedex

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.fans import ui_strings  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402

# A picture made here (no network, no shared data) stands in for the artwork a --artwork-url would give.
ART = ("data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' width='96' height='96'>"
       "<circle cx='48' cy='48' r='40' fill='gold'/><text x='10' y='55'>{dex3} {name}</text></svg>")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    clf = Classifier.load(tiny_checkpoint(root / "m.pt", 64, unknown_threshold=0.0))
    collect = root / "collected"
    png = io.BytesIO()
    draw_shape("square", CLASSES[1][1]).save(png, "PNG")
    pic = root / "pic.png"
    pic.write_bytes(png.getvalue())
    expected = clf.predict(png.getvalue())
    with served_app(create_app(clf, artwork_url=ART, collect_dir=collect)) as port:
        yield {"url": f"http://127.0.0.1:{port}", "collect": collect, "pic": pic, "expected": expected, "root": root}


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


_open = open_page  # the page opened in a new context (helpers.open_page)


def _upload(page, served):
    page.set_input_files("#file", str(served["pic"]))
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=20000)


def test_language_default_switch_and_persistence(browser, served):
    exp = served["expected"]
    page = _open(browser, served, locale="de-DE")
    assert page.input_value("#lang") == "de" and page.inner_text("h1") == "Pokémon-Erkenner"
    assert page.evaluate("document.documentElement.lang") == "de"
    _upload(page, served)
    assert pokedex.localized_name(exp["dex_id"], "de") in page.inner_text("#verdict")
    assert page.inner_text("#dexno") == f"#{exp['dex_id']:03d}"
    assert page.inner_text("#genus") == pokedex.genus(exp["dex_id"], "de")
    assert page.inner_text("#types").split("\n")[0] == pokedex.type_name(pokedex.types(exp["dex_id"])[0], "de")
    page.select_option("#lang", "ja")
    want = pokedex.localized_name(exp["dex_id"], "ja")
    page.wait_for_function(f"document.getElementById('verdict').textContent.includes({want!r})", timeout=10000)
    assert pokedex.localized_name(exp["dex_id"], "en") in page.inner_text("#verdict")  # English name beside it
    bars = [li.split("\n")[0] for li in page.locator("#bars .bar").all_inner_texts()]
    assert bars == [pokedex.localized_name(t["dex_id"], "ja") for t in exp["topk"]]
    assert page.inner_text("h1") == ui_strings()["ja"]["title"]  # the page's own strings follow the switch too
    page.reload()
    page.evaluate("window.pageReady")
    assert page.input_value("#lang") == "ja"  # persisted in localStorage
    page.context.close()


def test_keyboard_only_upload_is_announced(browser, served):
    page = _open(browser, served)
    seen = []
    for _ in range(12):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.id"))
        if seen[-1] == "choose":
            break
    assert seen[-1] == "choose", seen
    assert {"lang", "drop"} <= set(seen)
    with page.expect_file_chooser() as fc:
        page.keyboard.press("Enter")
    fc.value.set_files(str(served["pic"]))
    page.wait_for_function("document.getElementById('announce').textContent.length > 0", timeout=20000)
    exp = served["expected"]
    said = page.inner_text("#announce")
    assert pokedex.localized_name(exp["dex_id"], "en") in said and f"#{exp['dex_id']:03d}" in said
    assert page.get_attribute("#announce", "aria-live") == "polite"
    page.focus("#drop")
    with page.expect_file_chooser():
        page.keyboard.press(" ")  # Space on the drop zone opens the chooser too
    for _ in range(6):  # the rest of the controls are reachable onwards
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.id"))
    assert {"choose-video", "camera"} <= set(seen)
    page.context.close()


def test_axe_core_finds_no_serious_violations(browser, served):
    from axe_playwright_python.sync_playwright import Axe

    page = _open(browser, served)
    axe = Axe()
    before = axe.run(page).response["violations"]
    _upload(page, served)
    page.click("#fix summary")
    after = axe.run(page).response["violations"]
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in before + after
           if v["impact"] in ("serious", "critical")]
    assert bad == []
    page.context.close()


def test_live_camera_reaches_five_frames_per_second(browser, served):
    page = _open(browser, served)
    page.click("#camera")
    page.wait_for_function("document.getElementById('cam').videoWidth > 0", timeout=15000)
    facing = page.eval_on_selector_all("#facing option", "os => os.map(o => o.value)")
    assert facing[:2] == ["environment", "user"]
    page.click("#live")
    page.wait_for_function("window.liveRequests >= 3", timeout=15000)
    n0, t0 = page.evaluate("window.liveRequests"), time.perf_counter()
    page.wait_for_timeout(3000)
    n1, t1 = page.evaluate("window.liveRequests"), time.perf_counter()
    rate = (n1 - n0) / (t1 - t0)
    print(f"live mode: {rate:.1f} requests/s")
    assert rate >= 5, rate
    assert page.locator("#bars .bar").count() == 5 and page.inner_text("#error") == ""
    page.click("#stop")
    page.wait_for_timeout(300)
    stopped = page.evaluate("window.liveRequests")
    page.wait_for_timeout(500)
    assert page.evaluate("window.liveRequests") == stopped and page.is_hidden("#cam")
    assert page.evaluate("document.getElementById('cam').srcObject.getTracks().every(t => t.readyState === 'ended')")
    page.context.close()


def test_correction_is_saved_in_the_users_language(browser, served):
    page = _open(browser, served, locale="de-DE")
    _upload(page, served)
    page.click("#fix summary")
    page.fill("#fix-search", "Pantim")
    assert page.eval_on_selector_all("#fix-list option", "os => os.map(o => o.textContent)") == \
        ["#122 Pantimos (Mr. Mime)"]
    page.select_option("#fix-list", "122")
    page.click("#fix-send")
    page.click("#fix-yes")  # the confirm step (issue 26)
    page.wait_for_function("document.getElementById('fix-status').textContent.includes('mr-mime')", timeout=10000)
    assert page.inner_text("#fix-status").startswith("Danke")
    df = annotations.read_annotations(served["collect"])
    name = df[df.pokemon_id == 122].img_name.iloc[-1]
    assert (served["collect"] / "images" / name).read_bytes() == served["pic"].read_bytes()
    page.context.close()


def test_busy_state_stale_results_and_same_file_again(browser, served):
    page = _open(browser, served)
    page.evaluate("""() => { const f = window.fetch; window.predictCalls = 0;
      window.fetch = (u, o) => String(u).includes('/api/predict')
        ? (window.predictCalls++, new Promise(r => setTimeout(r, 700)).then(() => f(u, o))) : f(u, o); }""")
    bad = served["root"] / "bad.png"
    bad.write_bytes(b"<html>not a picture</html>")
    page.set_input_files("#file", str(bad))
    assert page.is_visible("#busy")  # from the very first request
    page.wait_for_function("document.getElementById('error').textContent.includes('not a readable image')")
    assert page.is_hidden("#busy") and page.is_hidden("#result")
    page.set_input_files("#file", str(served["pic"]))
    assert page.inner_text("#error") == "" and page.is_visible("#busy")  # the old error is gone at once
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=20000)
    assert page.is_hidden("#busy") and page.get_attribute("#result", "aria-busy") == "false"
    assert page.evaluate("document.getElementById('file').value") == ""  # the same file can be chosen again
    page.set_input_files("#file", str(served["pic"]))
    assert page.is_hidden("#result")  # the previous card is cleared while the new one is coming
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=20000)
    assert page.evaluate("window.predictCalls") == 3
    page.context.close()


def test_artwork_when_it_loads_type_colours_when_not(browser, served):
    page = _open(browser, served)
    _upload(page, served)
    page.wait_for_function("!document.getElementById('art').hidden && document.getElementById('art').naturalWidth > 0")
    dex = served["expected"]["dex_id"]
    assert f">{dex:03d} {pokedex.name(dex)}<" in page.get_attribute("#art", "src")  # {dex3} and {name} filled in
    page.evaluate("cfg.artwork_url = 'http://127.0.0.1:9/{dex_id}.png'")  # nothing listens there
    page.set_input_files("#file", str(served["pic"]))
    page.wait_for_function("document.querySelectorAll('#bars .bar').length === 5", timeout=20000)
    # the failed load hides the picture (an event, however long the refused connection takes)
    page.wait_for_function("document.getElementById('art').hidden && !document.getElementById('art').src",
                           timeout=10000)
    assert page.is_hidden("#art")
    bg = page.evaluate("getComputedStyle(document.getElementById('portrait')).backgroundColor + "
                       "getComputedStyle(document.getElementById('portrait')).backgroundImage")
    assert "rgb" in bg and "rgb(230, 230, 230)" not in bg  # a type colour, not the empty grey
    page.context.close()


def test_phone_viewport(browser, served, tmp_path):
    page = _open(browser, served, viewport=(390, 844))
    _upload(page, served)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sideways
    for sel in ("#choose", "#choose-video", "#camera"):
        box = page.locator(sel).bounding_box()
        assert box["height"] >= 40 and box["x"] >= 0 and box["x"] + box["width"] <= 390, sel
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert (tmp_path / "phone.png").stat().st_size > 5000
    page.context.close()


def test_video_verdict_with_pokemon_list_and_headline(browser, served):
    """The fields another part of the app adds later (`pokemon`, `headline`) are shown when present."""
    body = {"frames": 6, "fps": 2.0, "lang": "de", "headline": "Pikachu, dann Glurak",
            "overall": pokedex.localize_result({"dex_id": 25, "name": "Pikachu", "probability": 0.6, "unknown": False,
                                                "topk": [{"dex_id": 25, "name": "Pikachu", "probability": 0.6}]}, "de"),
            "segments": pokedex.localize_video({"segments": [
                {"start": 0.0, "end": 1.5, "name": "Pikachu", "dex_id": 25, "probability": 0.9},
                {"start": 1.5, "end": 3.0, "name": "Charizard", "dex_id": 6, "probability": 0.8}]}, "de")["segments"],
            "pokemon": pokedex.localize_video({"pokemon": [
                {"name": "Pikachu", "dex_id": 25, "ranges": [[0.0, 1.5]], "probability": 0.9},
                {"name": "Charizard", "dex_id": 6, "ranges": [[1.5, 3.0], [4.0, 5.0]], "probability": 0.8}]}, "de")["pokemon"]}
    page = _open(browser, served, locale="de-DE")
    seen = fake_video_answer(page, served, body)
    page.wait_for_function("document.getElementById('headline').textContent.length > 0", timeout=10000)
    assert "lang=de" in seen[0]
    # the headline is the page's own, from the localized names (not the server's sentence in one language)
    story = "Pikachu: 0–1.5\u00a0s; Glurak: 1.5–3\u00a0s, 4–5\u00a0s"  # German: NBSP before the unit
    assert page.inner_text("#headline") == story
    # the verdict is the story (both, in order), not the mean over every frame ("Pikachu 60%")
    verdict = page.inner_text("#verdict")
    assert verdict.index("Pikachu") < verdict.index("Glurak") and "60.0%" not in verdict
    assert page.inner_text("#announce") == story
    text = page.inner_text("#timeline")
    assert "Glurak #006" in text and "1.5–3.0\u00a0s, 4.0–5.0\u00a0s" in text and "80.0%" in text  # German units
    page.click("#vdetails summary")  # the frame-by-frame table and the note about means are behind Details
    assert page.inner_text("#note").startswith("6 Bilder")
    page.context.close()


@pytest.mark.parametrize("pokemon, headline, shown, hidden", [
    ([{"name": "Gengar", "dex_id": 94, "ranges": [[1.0, 4.0]], "probability": 0.97}], "Gengar 1–4 s",
     ["Gengar", "97.0%"], ["Pikachu", "35.0%"]),
    ([], "no Gen-1 Pokémon found", ["no Gen-1 Pokémon found"], ["Pikachu", "35.0%"]),
])
def test_video_verdict_names_the_pokemon_seen_not_the_mean_of_all_frames(browser, served, pokemon, headline, shown, hidden):
    """One Pokémon seen: its card and its own confidence; none: the headline, not the mean frame's top guess."""
    body = {"frames": 10, "fps": 2.0, "lang": "en", "headline": headline,
            "overall": pokedex.localize_result({"dex_id": 25, "name": "Pikachu", "probability": 0.35, "unknown": False,
                                                "topk": [{"dex_id": 25, "name": "Pikachu", "probability": 0.35}]}, "en"),
            "segments": [], "pokemon": pokedex.localize_video({"pokemon": pokemon}, "en")["pokemon"]}
    page = _open(browser, served)
    fake_video_answer(page, served, body, "clip2.mp4")
    page.wait_for_function("document.getElementById('headline').textContent.length > 0", timeout=10000)
    verdict = page.inner_text("#verdict")
    assert all(x in verdict for x in shown) and not any(x in verdict for x in hidden), verdict
    page.context.close()


def test_japanese_page_shows_no_english_ui_string(browser, served):
    """A Japanese browser gets the whole page in Japanese: nothing of UI.en in what it shows (brand words
    aside), before and after a picture, with lang="ja" so the browser picks a Japanese font."""
    from test_i18n import BRANDS, SERVER_EN

    english = [v for v in SERVER_EN.values() if len(v) > 3 and v not in BRANDS]
    page = _open(browser, served, locale="ja-JP")
    assert page.input_value("#lang") == "ja" and page.evaluate("document.documentElement.lang") == "ja"
    assert page.title() == ui_strings()["ja"]["title"]
    shown = [page.inner_text("body")]
    _upload(page, served)
    shown.append(page.inner_text("body"))
    # the server's errors are English sentences: the page says in Japanese what happened, then quotes it
    bad = served["root"] / "notes.jpg"
    bad.write_bytes(b"shopping list: milk, eggs")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('error').textContent.includes('not a readable image')")
    assert page.inner_text("#error").startswith(ui_strings()["ja"]["serverSaid"].split("{x}")[0])
    page.context.close()
    for text in shown:
        assert not [e for e in english if e in text], text
