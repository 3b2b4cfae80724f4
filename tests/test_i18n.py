"""The pages' own strings (static/i18n.json) in every language of the Pokédex facts, without a browser:
each English key of both pages (UI.en in static/index.html, EN in static/web/app.js) translated into all
of them with the same placeholders and HTML, no Japanese, Korean or Chinese string left in English, and
the app serving one language at GET /api/ui-strings. A key added to a page without its translations
fails here: that is the point (tests/test_browser.py and test_web.py look at the rendered pages)."""

import json
import re
from pathlib import Path

import pytest

from pokemon_classifier import pokedex

STATIC = Path(pokedex.__file__).resolve().parent / "static"
STRINGS = json.loads((STATIC / "i18n.json").read_text(encoding="utf-8"))
CJK = ("ja", "ja-Hrkt", "ko", "zh-Hans", "zh-Hant")
BRANDS = {"Pokémon"}  # the same word in every language that writes it in Latin letters


def js_strings(text: str, start: str, end: str, where: str) -> dict[str, str]:
    """`key: "text"` pairs of a JavaScript object literal between `start` and the next `end`; every key
    must have a double-quoted string, or a new key could slip past this test unseen."""
    i = text.index(start) + len(start)
    body = text[i:text.index(end, i)]
    pairs = re.findall(r'(\w+):\s*"((?:[^"\\]|\\.)*)"', body)
    keys = re.findall(r"(\w+)\s*:", re.sub(r'"(?:[^"\\]|\\.)*"', '""', body))
    assert [k for k, _ in pairs] == keys, f"{where}: a key whose text is not one double-quoted string"
    return {k: json.loads(f'"{v}"') for k, v in pairs}


SERVER_EN = js_strings((STATIC / "index.html").read_text(encoding="utf-8"), "  en: {", "\n  },", "index.html UI.en")
WEB_EN = js_strings((STATIC / "web" / "app.js").read_text(encoding="utf-8"), "const EN = {", "\n};", "app.js EN")
ENGLISH = {**SERVER_EN, **WEB_EN}


def placeholders(s: str) -> list[str]:
    return sorted(re.findall(r"\{\w+\}", s))


def words(s: str) -> bool:
    """Whether a string has letters outside its placeholders: a bare separator such as ", " may stay."""
    return bool(re.search(r"[^\W\d_]", re.sub(r"\{\w+\}", "", s)))


def markup(s: str) -> list[str]:
    """The tags and what <code> holds (API paths and field names are not translated)."""
    return re.findall(r"<[^>]+>", s) + re.findall(r"<code>(.*?)</code>", s)


def test_sources_are_found_and_do_not_share_keys():
    assert len(SERVER_EN) >= 30 and len(WEB_EN) >= 15
    assert "footer" in SERVER_EN and "webFooter" in WEB_EN
    assert not set(SERVER_EN) & set(WEB_EN)  # one file, two pages: distinct names


def test_every_language_of_the_facts_and_the_meta():
    assert [k for k in STRINGS if k != "_meta"] == list(pokedex.LANGUAGES)
    meta = STRINGS["_meta"]
    assert set(meta["machine_translated"]) | set(meta["reviewed"]) == set(pokedex.LANGUAGES) - {"en"}
    assert set(meta["machine_translated"]) <= set(pokedex.LANGUAGES)


def test_english_in_the_file_is_the_pages_english():
    """A changed English text fails here too, so its translations are looked at again."""
    assert STRINGS["en"] == ENGLISH


@pytest.mark.parametrize("lang", [t for t in pokedex.LANGUAGES if t != "en"])
def test_every_english_key_is_translated_with_the_same_placeholders_and_html(lang):
    got = STRINGS[lang]
    missing = [k for k in ENGLISH if k not in got]
    assert not missing, f"i18n.json: {lang} lacks {missing}"
    assert not set(got) - set(ENGLISH), f"i18n.json: {lang} has keys no page uses: {set(got) - set(ENGLISH)}"
    for key, en in ENGLISH.items():
        text = got[key]
        assert text.strip(), (lang, key)
        assert placeholders(text) == placeholders(en), (lang, key, text)
        assert markup(text) == markup(en), (lang, key, text)
        assert text != en or en in BRANDS or not words(en), f"i18n.json: {lang} {key} is still English: {text!r}"


@pytest.mark.parametrize("lang", CJK)
def test_cjk_strings_contain_none_of_the_english_ones(lang):
    """The issue's test: no Japanese (Korean, Chinese) UI string holds an English one (brand words aside)."""
    english = {v for v in ENGLISH.values() if len(v) > 3 and v not in BRANDS}
    for key, text in STRINGS[lang].items():
        leaked = [e for e in english if e in text]
        assert not leaked, (lang, key, leaked)


def test_the_app_serves_one_language_negotiated_like_the_facts():
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from pokemon_classifier.fans import fan_router

    app = FastAPI()
    app.include_router(fan_router())
    c = TestClient(app)
    r = c.get("/api/ui-strings?lang=ja").json()
    assert r == {"lang": "ja", "strings": STRINGS["ja"]}
    assert c.get("/api/ui-strings", headers={"Accept-Language": "zh-TW,en;q=0.5"}).json()["lang"] == "zh-Hant"
    assert c.get("/api/ui-strings?lang=pt-BR").json() == {"lang": "en", "strings": STRINGS["en"]}
