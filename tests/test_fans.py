"""The fan-facing API: localized verdicts, Accept-Language, /api/pokedex, /api/config, /api/feedback, https."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import CLASSES, run_cli, served_app, tiny_checkpoint
from helpers import png as _png
from pokemon_classifier import annotations, pokedex

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from pokemon_classifier.app import create_app  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402


def _predict(c, **kw):
    r = c.post("/api/predict", files={"file": ("x.png", _png(), "image/png")}, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def test_predict_is_a_localized_superset(clf):
    c = TestClient(create_app(clf))
    plain = clf.predict(_png())
    body = _predict(c, params={"lang": "de"})
    for key in ("dex_id", "name", "probability", "unknown", "topk"):
        assert key in body
    assert body["name"] == plain["name"] and body["dex_id"] == plain["dex_id"] and body["lang"] == "de"
    want = pokedex.facts(body["dex_id"], "de")
    assert body["display_name"] == want["display_name"] and body["genus"] == want["genus"]
    assert body["english_name"] == pokedex.localized_name(body["dex_id"], "en")
    assert body["types"] == want["types"] and body["types"][0]["name"] == pokedex.type_name(body["types"][0]["id"], "de")
    for t, p in zip(body["topk"], plain["topk"]):
        assert t["dex_id"] == p["dex_id"] and t["display_name"] == pokedex.localized_name(t["dex_id"], "de")


@pytest.mark.parametrize("header,query,want", [
    ("ja-JP,ja;q=0.9", None, "ja"), ("zh-TW", None, "zh-Hant"), ("zh-CN,zh;q=0.9", None, "zh-Hans"),
    ("pt-BR,pt;q=0.9", None, "en"), ("pt-BR, ko;q=0.5", None, "ko"), ("de", "fr", "fr"), ("de", "xx", "de"),
    (None, None, "en"),
])
def test_accept_language_and_lang_query(clf, header, query, want):
    c = TestClient(create_app(clf))
    headers = {"Accept-Language": header} if header else {}
    body = _predict(c, headers=headers, params={"lang": query} if query else {})
    assert body["lang"] == want
    assert body["topk"][0]["display_name"] == pokedex.localized_name(body["topk"][0]["dex_id"], want)


def test_unknown_verdict_has_no_facts_but_localized_guesses(tmp_path):
    clf = Classifier.load(tiny_checkpoint(tmp_path / "u.pt", 64, unknown_threshold=0.99))
    body = _predict(TestClient(create_app(clf)), params={"lang": "ko"})
    assert body["unknown"] and body["dex_id"] is None and body["display_name"] is None and body["types"] == []
    assert body["topk"][0]["display_name"] == pokedex.localized_name(body["topk"][0]["dex_id"], "ko")


def test_video_is_localized(clf, tmp_path):
    from test_predict import _write_video

    v = tmp_path / "v.mp4"
    _write_video(v, [CLASSES[1], CLASSES[4]])
    r = TestClient(create_app(clf)).post("/api/predict_video?fps=2", headers={"Accept-Language": "fr"},
                                         files={"file": ("v.mp4", v.read_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["lang"] == "fr" and d["frames"] == 4 and d["segments"]
    o = d["overall"]
    assert o["display_name"] == pokedex.localized_name(o["dex_id"], "fr")
    s = d["segments"][0]
    assert s["display_name"] == pokedex.localized_name(s["dex_id"], "fr") and "start" in s


def test_pokedex_and_config_endpoints(clf):
    c = TestClient(create_app(clf, artwork_url="https://example.org/{dex_id}.png"))
    d = c.get("/api/pokedex", params={"lang": "zh-TW"}).json()
    assert d["lang"] == "zh-Hant" and len(d["pokemon"]) == 151
    assert d["pokemon"][0] == {"name": "Bulbasaur", "slug": "bulbasaur", **pokedex.facts(1, "zh-Hant")}
    assert [p["slug"] for p in d["pokemon"][28:29] + d["pokemon"][82:83] + d["pokemon"][121:122]] == \
        ["nidoran-f", "farfetchd", "mr-mime"]
    assert c.get("/api/pokedex", headers={"Accept-Language": "de-CH"}).json()["pokemon"][121]["display_name"] == "Pantimos"
    cfg = c.get("/api/config", headers={"Accept-Language": "es-MX"}).json()
    assert cfg == {"lang": "es-419", "languages": pokedex.LANGUAGES, "artwork_url": "https://example.org/{dex_id}.png",
                   "collect": False, "max_upload_mb": 10.0}
    for tag in ("en", "de", "fr", "es", "it", "ja", "ko", "zh-Hans", "zh-Hant"):
        assert tag in cfg["languages"]


def test_feedback_is_404_without_collect(clf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = TestClient(create_app(clf))
    r = c.post("/api/feedback", files={"file": ("x.png", _png(), "image/png")}, data={"dex_id": "25"})
    assert r.status_code == 404 and "--collect" in r.json()["error"]
    assert list(tmp_path.iterdir()) == []


def test_feedback_saves_in_the_data_format(clf, tmp_path):
    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    assert c.get("/api/config").json()["collect"] is True
    r = c.post("/api/feedback", files={"file": ("../../evil.png", _png(fmt="JPEG"), "image/png")}, data={"dex_id": "25"})
    assert r.status_code == 200, r.text
    assert r.json() == {"saved": "images/pikachu001.jpg", "dex_id": 25, "name": "Pikachu"}
    assert (col / "images" / "pikachu001.jpg").read_bytes() == _png(fmt="JPEG")
    assert not (tmp_path / "evil.png").exists()
    df = annotations.read_annotations(col)
    assert list(df.img_name) == ["pikachu001.jpg"] and list(df.pokemon_id) == [25]


@pytest.mark.parametrize("data,files,code", [
    ({"dex_id": "0"}, True, 400), ({"dex_id": "152"}, True, 400), ({"dex_id": "pikachu"}, True, 400),
    ({}, True, 400), ({"dex_id": "25"}, False, 400),
])
def test_feedback_bad_requests(clf, tmp_path, data, files, code):
    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    kw = {"files": {"file": ("x.png", _png(), "image/png")}} if files else {"files": {"other": ("x", b"x", "text/plain")}}
    r = c.post("/api/feedback", data=data, **kw)
    assert r.status_code == code and r.json()["error"]
    assert not list((col / "images").iterdir()) and not (col / "annotations.csv").exists()


def test_feedback_bad_and_oversized_images(clf, tmp_path):
    col = tmp_path / "col"
    c = TestClient(create_app(clf, max_upload=1000, collect_dir=col))
    r = c.post("/api/feedback", files={"file": ("x.png", b"<html>hi</html>", "image/png")}, data={"dex_id": "25"})
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]
    r = c.post("/api/feedback", files={"file": ("x.png", b"\x89PNG" + b"\0" * 2000, "image/png")}, data={"dex_id": "25"})
    assert r.status_code == 413
    assert not list((col / "images").iterdir()) and not (col / "annotations.csv").exists()


def test_concurrent_feedback_posts_over_a_real_server(clf, tmp_path):
    import requests

    col = tmp_path / "col"
    with served_app(create_app(clf, collect_dir=col)) as port:
        def one(i):
            return requests.post(f"http://127.0.0.1:{port}/api/feedback", data={"dex_id": str(1 + i % 3)},
                                 files={"file": ("x", _png(fmt="PNG" if i % 2 else "JPEG", seed=i), "image/png")}, timeout=60)

        with ThreadPoolExecutor(16) as ex:
            rs = list(ex.map(one, range(30)))
    assert [r.status_code for r in rs] == [200] * 30
    saved = sorted(r.json()["saved"] for r in rs)
    assert len(set(saved)) == 30
    df = annotations.read_annotations(col)
    assert sorted("images/" + n for n in df.img_name) == saved
    assert df.pokemon_id.value_counts().to_dict() == {1: 10, 2: 10, 3: 10}


def test_https_server_answers(clf):
    import requests

    from pokemon_classifier.certs import uvicorn_tls

    with uvicorn_tls(True, "127.0.0.1") as tls:
        with served_app(create_app(clf), **tls) as port:
            r = requests.get(f"https://127.0.0.1:{port}/api/health", verify=tls["ssl_certfile"], timeout=30)
    assert r.status_code == 200 and r.json()["classes"] == 151


def test_serve_help_documents_phones_https_artwork_and_collect():
    code, out, _ = run_cli("serve", "--help")
    assert code == 0
    for flag in ("0.0.0.0", "--https", "--artwork-url", "--collect"):
        assert flag in out


# ------------------------------------------------------------------ one correction per picture, negatives (issue 26)
def _feedback(c, data, **fields):
    return c.post("/api/feedback", files={"file": ("x.png", data, "image/png")}, data=fields)


def test_a_second_save_of_the_same_picture_is_refused_with_409(clf, tmp_path):
    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    assert _feedback(c, _png(), dex_id="25").json()["saved"] == "images/pikachu001.png"
    for again in ({"dex_id": "25"}, {"dex_id": "7"}, {"answer": "not-pokemon"}):  # a replay, another label
        r = _feedback(c, _png(), **again)
        assert r.status_code == 409, (again, r.text)
        assert list(r.json()) == ["error"] and "\n" not in r.json()["error"]
        assert "already saved (images/pikachu001.png)" in r.json()["error"] and str(tmp_path) not in r.text
    assert list(annotations.read_annotations(col).img_name) == ["pikachu001.png"]
    assert not (col / "negatives").exists()
    # the other way round: a picture kept as a negative is not saved as a Pokémon afterwards
    assert _feedback(c, _png(seed=1), answer="later-gen").status_code == 200
    r = _feedback(c, _png(seed=1), dex_id="25")
    assert r.status_code == 409 and "negatives/images/later-gen001.png" in r.json()["error"]


def test_negative_answers_land_where_calibrate_reads_them(clf, tmp_path):
    from pokemon_classifier.openset import read_negatives

    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    r = _feedback(c, _png(fmt="JPEG"), answer="not-pokemon")
    assert r.status_code == 200, r.text
    assert r.json() == {"saved": "negatives/images/not-pokemon001.jpg", "answer": "not-pokemon", "kind": "photo"}
    assert _feedback(c, _png(seed=1), answer="later-gen").json()["saved"] == "negatives/images/later-gen001.png"
    assert _feedback(c, _png(seed=2), answer="not-pokemon").json()["saved"] == "negatives/images/not-pokemon002.png"
    assert (col / "negatives" / "images" / "not-pokemon001.jpg").read_bytes() == _png(fmt="JPEG")
    table = read_negatives(col / "negatives")  # what `calibrate --negatives DIR` reads
    assert dict(zip(table.img_name, table.kind)) == {"later-gen001.png": "later-gen", "not-pokemon001.jpg": "photo",
                                                     "not-pokemon002.png": "photo"}
    assert set(table.half) <= {"tune", "report"}
    assert not (col / "annotations.csv").exists() and not list((col / "images").iterdir())  # not a Pokémon class
    assert not list(col.rglob("*.tmp"))


@pytest.mark.parametrize("data,code", [
    ({"answer": "digimon"}, 400), ({"answer": "not-pokemon", "dex_id": "25"}, 400), ({"answer": ""}, 400),
])
def test_feedback_bad_answers(clf, tmp_path, data, code):
    col = tmp_path / "col"
    r = _feedback(TestClient(create_app(clf, collect_dir=col)), _png(), **data)
    assert r.status_code == code and r.json()["error"]
    assert not (col / "negatives").exists()


def test_negatives_share_the_budget_and_are_repaired_at_start(clf, tmp_path, capsys):
    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col, collect_max_files=2))
    assert _feedback(c, _png(), dex_id="25").status_code == 200
    assert _feedback(c, _png(seed=1), answer="not-pokemon").status_code == 200
    r = _feedback(c, _png(seed=2), answer="later-gen")
    assert r.status_code == 413 and "--collect-max-files" in r.json()["error"]
    # a save killed between its picture and its row, a reviewer's deletion, a killed manifest write
    neg = col / "negatives"
    (neg / "images" / "later-gen007.png").write_bytes(_png(seed=3))
    (neg / "images" / "not-pokemon001.png").unlink()
    (neg / ".manifest.csv.abcd1234.tmp").write_bytes(b"half")
    capsys.readouterr()
    c = TestClient(create_app(clf, collect_dir=col, collect_max_files=2))
    err = capsys.readouterr().err
    assert "dropped 1 negatives rows" in err and "moved 1 negatives without a row" in err and err.count("\n") == 1
    assert (neg / "unlisted" / "later-gen007.png").is_file() and not list(col.rglob("*.tmp"))
    assert _feedback(c, _png(seed=4), answer="later-gen").json()["saved"] == "negatives/images/later-gen008.png"


def test_a_broken_negatives_manifest_is_one_line_naming_it(clf, tmp_path):
    from pokemon_classifier.collect import Collector
    from pokemon_classifier.errors import UserError

    col = tmp_path / "col"
    c = TestClient(create_app(clf, collect_dir=col))
    assert _feedback(c, _png(), answer="not-pokemon").status_code == 200
    (col / "negatives" / "manifest.csv").write_text("name,what\nx.png,photo\n")  # damaged while serving
    r = _feedback(c, _png(seed=1), answer="later-gen")
    assert r.status_code == 400 and "negatives/manifest.csv" in r.json()["error"] and str(tmp_path) not in r.text
    with pytest.raises(UserError, match=r"manifest\.csv: header must include img_name,kind") as e:
        Collector(col)  # and a start refuses it rather than the first post
    assert "\n" not in str(e.value)
