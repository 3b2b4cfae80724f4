"""The correction flow ("Wrong? Pick the right one", issue 26) in real headless Chromium: nothing pre-selected,
a confirm step, one save per picture, the card showing the answer, the two negative answers. One server and
one browser for the module; skips (with the reason) where Chromium or Playwright is absent."""

import io

import pytest

from helpers import CLASSES, chromium, draw_shape, served_app, tiny_checkpoint
from pokemon_classifier import annotations, pokedex

pytest.importorskip("fastapi")
pytest.importorskip("playwright.sync_api")

from test_browser import _open, _upload  # noqa: E402  (the page opened and a picture classified, as there)

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.fans import ui_strings  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402

PICK_FIRST = "Choose a Pokémon from the list first."


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("fix")
    clf = Classifier.load(tiny_checkpoint(root / "m.pt", 64, unknown_threshold=0.0))
    collect = root / "collected"
    with served_app(create_app(clf, collect_dir=collect)) as port:
        yield {"url": f"http://127.0.0.1:{port}", "collect": collect, "root": root}


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def _picture(served, seed: int):
    """A picture of its own per test: the server keeps one correction per picture."""
    import numpy as np

    b = io.BytesIO()
    draw_shape("square", CLASSES[1][1], rng=np.random.default_rng(seed)).save(b, "PNG")
    path = served["root"] / f"pic{seed}.png"
    path.write_bytes(b.getvalue())
    return {"pic": path}


def _open_fix(browser, served, seed, **kw):
    page = _open(browser, served, **kw)
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and "/api/feedback" in r.url else None)
    _upload(page, _picture(served, seed))
    page.click("#fix summary")
    return page, posts


def _state(page):
    return page.evaluate("""() => ({sel: document.getElementById('fix-list').selectedIndex,
      value: document.getElementById('fix-list').value,
      pressed: [...document.querySelectorAll('#fix [aria-pressed=true]')].map(b => b.id),
      send: document.getElementById('fix-send').getAttribute('aria-disabled'),
      search: document.getElementById('fix-search').value})""")


def test_nothing_is_preselected_and_send_without_a_pick_asks_for_one(browser, served):
    page, posts = _open_fix(browser, served, 1)
    assert _state(page) == {"sel": -1, "value": "", "pressed": [], "send": "true", "search": ""}
    page.click("#fix-send", force=True)  # aria-disabled: greyed but focusable, so it can say why
    assert page.inner_text("#fix-msg") == PICK_FIRST and page.is_hidden("#fix-confirm")
    # what a search and a pick leave behind is not carried over to the next picture
    page.fill("#fix-search", "pika")
    page.select_option("#fix-list", "25")
    assert _state(page)["send"] == "false"
    page.fill("#fix-search", "")  # the pick survives the search being cleared
    assert _state(page)["value"] == "25"
    _upload(page, _picture(served, 2))
    page.click("#fix summary")
    assert _state(page) == {"sel": -1, "value": "", "pressed": [], "send": "true", "search": ""}
    assert page.locator("#fix-list option").count() == 151
    page.click("#fix-send", force=True)  # aria-disabled: greyed but focusable, so it can say why
    assert page.inner_text("#fix-msg") == PICK_FIRST
    assert posts == [] and not (served["collect"] / "annotations.csv").exists()
    page.context.close()


def test_confirm_step_by_keyboard_and_cancel_saves_nothing(browser, served):
    page, posts = _open_fix(browser, served, 3)
    page.select_option("#fix-list", "25")
    page.focus("#fix-send")
    page.keyboard.press("Enter")
    assert page.is_visible("#fix-confirm")
    assert page.inner_text("#fix-question") == "Save “Pikachu” as the right answer?"
    assert page.evaluate("document.activeElement.id") == "fix-yes"  # keyboard users land on the question
    assert page.get_attribute("#fix-confirm", "aria-labelledby") == "fix-question"
    page.keyboard.press("Escape")
    assert page.is_hidden("#fix-confirm") and page.evaluate("document.activeElement.id") == "fix-send"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "fix-no"
    page.keyboard.press("Enter")  # Cancel
    assert page.is_hidden("#fix-confirm")
    page.click("#fix-not-pokemon")  # another choice: the open question about Pikachu is withdrawn
    assert _state(page)["sel"] == -1 and _state(page)["pressed"] == ["fix-not-pokemon"]
    page.click("#fix-send")
    assert page.inner_text("#fix-question") == "Save “Not a Pokémon” as the right answer?"
    page.select_option("#fix-list", "7")
    assert page.is_hidden("#fix-confirm") and _state(page)["pressed"] == []
    assert posts == [] and not (served["collect"] / "annotations.csv").exists()
    page.context.close()


def test_confirm_saves_once_on_a_double_click_and_the_card_shows_the_answer(browser, served):
    page, posts = _open_fix(browser, served, 4)
    page.fill("#fix-search", "charm")
    page.select_option("#fix-list", "4")
    page.click("#fix-send")
    page.dblclick("#fix-yes")
    page.wait_for_function("document.getElementById('fix-status').textContent.startsWith('Thank you')", timeout=10000)
    assert len(posts) == 1
    df = annotations.read_annotations(served["collect"])
    assert list(df.pokemon_id) == [4] and list(df.img_name) == ["charmander001.png"]
    assert page.inner_text("#verdict") == "Corrected by you: Charmander"
    assert page.inner_text("#dexno") == "#004" and page.inner_text("#genus") == pokedex.genus(4, "en")
    assert page.inner_text("#types") == pokedex.type_name(pokedex.types(4)[0], "en")
    assert page.is_hidden("#fix") and not page.evaluate("document.getElementById('fix').open")
    assert page.is_disabled("#fix-send") and page.is_visible("#fix-status")
    assert "Corrected by you: Charmander" in page.inner_text("#history-list li:first-child")  # the history too
    # a replay of the same picture is refused by the server too
    code = page.evaluate("""async () => { const fd = new FormData(); fd.append('file', lastBlob, 'x');
      fd.append('dex_id', '4'); return (await fetch('/api/feedback', {method: 'POST', body: fd})).status; }""")
    assert code == 409 and len(annotations.read_annotations(served["collect"])) == 1
    # the user's answer stays on the card in another language
    page.select_option("#lang", "de")
    want = pokedex.localized_name(4, "de")
    page.wait_for_function(f"document.getElementById('verdict').textContent.includes({want!r})", timeout=10000)
    corrected = ui_strings()["de"]["correctedBy"].split("{x}")[0]  # the German page says it in German
    assert page.inner_text("#verdict").startswith(corrected) and page.is_hidden("#fix")
    page.context.close()


def test_not_a_pokemon_is_kept_as_a_negative(browser, served):
    from pokemon_classifier.openset import read_negatives

    page, posts = _open_fix(browser, served, 5)
    page.click("#fix-not-pokemon")
    page.click("#fix-send")
    page.click("#fix-yes")
    page.wait_for_function("document.getElementById('fix-status').textContent.includes('not-pokemon001')",
                           timeout=10000)
    assert page.inner_text("#verdict") == "Corrected by you: Not a Pokémon" and page.inner_text("#dexno") == ""
    page.reload()
    page.evaluate("window.pageReady")  # kept in this browser: after a reload the entry still says so
    assert "Corrected by you: Not a Pokémon" in page.inner_text("#history-list li:first-child")
    table = read_negatives(served["collect"] / "negatives")
    assert dict(zip(table.img_name, table.kind)) == {"not-pokemon001.png": "photo"}
    assert (served["collect"] / "negatives" / "images" / "not-pokemon001.png").read_bytes() == \
        (served["root"] / "pic5.png").read_bytes()
    page.context.close()
