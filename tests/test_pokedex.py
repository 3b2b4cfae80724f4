import pytest

from pokemon_classifier import pokedex
from pokemon_classifier.errors import UserError


def test_151_unique_names_and_ends():
    assert len(pokedex.NAMES) == 151
    assert pokedex.name(1) == "bulbasaur" and pokedex.name(151) == "mew"
    assert pokedex.name(25) == "pikachu" and pokedex.name(150) == "mewtwo"


@pytest.mark.parametrize("spelling,dex", [
    ("MrMime", 122), ("Mr. Mime", 122), ("mr_mime", 122), ("mr.mime", 122), ("mr-mime", 122), ("mr__mime", 122),
    ("Nidoran♀", 29), ("nidoranf", 29), ("nidoran_f", 29), ("nidoran-f", 29), ("Nidoran♂", 32), ("nidoran_m", 32),
    ("Farfetch'd", 83), ("farfetch_d", 83), ("Farfetchd", 83), ("PIKACHU", 25), (" pikachu ", 25), ("25", 25), (25, 25),
])
def test_normaliser(spelling, dex):
    assert pokedex.to_id(spelling) == dex


@pytest.mark.parametrize("bad", ["pikachoo", "Alolan Sandslash", "", "chikorita", "0", "152"])
def test_unknown_names_are_clear_errors(bad):
    with pytest.raises(UserError) as e:
        pokedex.to_id(bad)
    assert bad.strip() in str(e.value) or "outside" in str(e.value)


def test_display_names():
    assert pokedex.display_name(29) == "Nidoran♀"
    assert pokedex.display_name(32) == "Nidoran♂"
    assert pokedex.display_name(122) == "Mr. Mime"
    assert pokedex.display_name(83) == "Farfetch'd"
    assert pokedex.display_name(6) == "Charizard"


@pytest.mark.parametrize("fn,dex", [("abra001.jpg", 63), ("mr-mime007.png", 122), ("nidoran-f004.jpg", 29),
                                    ("farfetchd010.jpg", 83), ("porygon003.webp", 137)])
def test_id_from_filename(fn, dex):
    assert pokedex.id_from_filename(fn) == dex


def test_id_from_filename_rejects_unnumbered():
    with pytest.raises(UserError, match="notanumber.jpg"):
        pokedex.id_from_filename("notanumber.jpg")


def test_names_match_shared_data(shared_data):
    import pandas as pd

    df = pd.read_csv(shared_data / "annotations.csv")
    for name, dex in zip(df["img_name"], df["pokemon_id"]):
        assert pokedex.id_from_filename(name) == dex, name


def test_parse_filename_gives_class_and_number():
    assert pokedex.parse_filename("mr-mime007.jpg") == (122, 7)
    assert pokedex.parse_filename("images/nidoran-f104.png") == (29, 104)


# ------------------------------------------------------------------ localized facts
def _generator():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "make_pokedex_data.py"
    spec = importlib.util.spec_from_file_location("make_pokedex_data", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_facts_equal_the_generators_output():
    from importlib import resources

    gen = _generator()
    src = gen.find_src()
    if src is None:
        pytest.skip("shared/data/pokedex not present above this checkout")
    for name, text in gen.build(src).items():
        shipped = resources.files("pokemon_classifier").joinpath(f"pokedex_data/{name}").read_text(encoding="utf-8")
        assert shipped == text, f"pokedex_data/{name} is stale: run python tools/make_pokedex_data.py"


def test_generator_refuses_incomplete_sources(tmp_path):
    gen = _generator()
    (tmp_path / "names.csv").write_text("dex_id,lang,name,genus\n1,en,Bulbasaur,Seed Pokémon\n", encoding="utf-8")
    (tmp_path / "types.csv").write_text("dex_id,slot,type\n1,1,grass\n", encoding="utf-8")
    (tmp_path / "type_names.csv").write_text("type,lang,name\ngrass,en,Grass\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing names"):
        gen.build(tmp_path)


def test_every_id_has_facts_in_every_language():
    for lang in pokedex.LANGUAGES:
        for i in pokedex.IDS:
            f = pokedex.facts(i, lang)
            assert f["display_name"] and f["genus"] and f["english_name"], (i, lang)
            assert 1 <= len(f["types"]) <= 2 and all(t["name"] for t in f["types"])


@pytest.mark.parametrize("lang,dex,name,genus_,type0", [
    ("en", 25, "Pikachu", "Mouse Pokémon", "Electric"), ("de", 25, "Pikachu", "Maus-Pokémon", "Elektro"),
    ("de", 122, "Pantimos", "Sperren-Pokémon", "Psycho"), ("fr", 6, "Dracaufeu", "Pokémon Flamme", "Feu"),
    ("es", 7, "Squirtle", "Pokémon Tortuguita", "Agua"), ("it", 1, "Bulbasaur", "Pokémon Seme", "Erba"),
    ("ja", 25, "ピカチュウ", "ねずみポケモン", "でんき"), ("ko", 25, "피카츄", "쥐포켓몬", "전기"),
    ("zh-Hans", 1, "妙蛙种子", "种子宝可梦", "草"), ("zh-Hant", 1, "妙蛙種子", "種子寶可夢", "草"),
])
def test_localized_facts(lang, dex, name, genus_, type0):
    f = pokedex.facts(dex, lang)
    assert (f["display_name"], f["genus"], f["types"][0]["name"]) == (name, genus_, type0)


def test_types_and_romaji_genus_fallback():
    assert pokedex.types(81) == ["electric", "steel"] and pokedex.types(35) == ["fairy"]
    assert pokedex.localized_name(25, "ja-Latn") == "Pikachu" and pokedex.genus(25, "ja-Latn") == "Mouse Pokémon"
    assert pokedex.localized_name(25, "pt") == "Pikachu"  # unsupported -> English


@pytest.mark.parametrize("tag,want", [
    ("de", "de"), ("de-AT", "de"), ("DE_de", "de"), ("en-GB", "en"), ("fr-CA", "fr"), ("zh-TW", "zh-Hant"),
    ("zh-HK", "zh-Hant"), ("zh-Hant-TW", "zh-Hant"), ("zh", "zh-Hans"), ("zh-CN", "zh-Hans"), ("zh-hans", "zh-Hans"),
    ("es-MX", "es-419"), ("es-ES", "es"), ("ja-JP", "ja"), ("ja-Latn", "ja-Latn"), ("pt-BR", None), ("pt", None),
    ("", None), (None, None), ("x", None),
])
def test_normalize_language(tag, want):
    assert pokedex.normalize_language(tag) == want


@pytest.mark.parametrize("lang,header,want", [
    (None, None, "en"), ("de", "fr", "de"), ("pt", "fr", "fr"), (None, "pt-BR,pt;q=0.9,en;q=0.8", "en"),
    (None, "en;q=0.5, de;q=0.9", "de"), (None, "pt, zh-TW;q=0.8, en;q=0.7", "zh-Hant"), (None, "ko;q=0, it", "it"),
    (None, "pt, *;q=0.1", "en"), (None, "de;q=abc, fr;q=0.2", "fr"), (None, ",,; ;q=1", "en"),
])
def test_negotiate_language(lang, header, want):
    assert pokedex.negotiate_language(lang, header) == want


def test_localize_result_adds_facts_and_keeps_the_old_fields():
    r = {"dex_id": 25, "name": "Pikachu", "probability": 0.9, "unknown": False,
         "topk": [{"dex_id": 25, "name": "Pikachu", "probability": 0.9}, {"dex_id": 122, "name": "Mr. Mime", "probability": 0.1}]}
    out = pokedex.localize_result(r, "de")
    assert out["name"] == "Pikachu" and out["probability"] == 0.9 and out["lang"] == "de"
    assert out["genus"] == "Maus-Pokémon" and out["types"] == [{"id": "electric", "name": "Elektro"}]
    assert out["topk"][1]["display_name"] == "Pantimos" and out["topk"][1]["english_name"] == "Mr. Mime"
    assert out["topk"][1]["name"] == "Mr. Mime" and "display_name" not in r  # input untouched


def test_localize_unknown_keeps_localized_guesses():
    r = {"dex_id": None, "name": "unknown", "probability": 0.2, "unknown": True,
         "topk": [{"dex_id": 6, "name": "Charizard", "probability": 0.2}]}
    out = pokedex.localize_result(r, "fr")
    assert out["display_name"] is None and out["types"] == [] and out["genus"] is None
    assert out["topk"][0]["display_name"] == "Dracaufeu"


def test_localize_video_covers_overall_segments_and_pokemon():
    v = {"frames": 2, "fps": 2.0, "overall": {"dex_id": 1, "name": "Bulbasaur", "probability": 0.5, "unknown": False,
                                              "topk": [{"dex_id": 1, "name": "Bulbasaur", "probability": 0.5}]},
         "segments": [{"start": 0, "end": 1, "name": "unknown", "dex_id": None, "probability": 0.1},
                      {"start": 1, "end": 2, "name": "Bulbasaur", "dex_id": 1, "probability": 0.7}],
         "pokemon": [{"name": "Bulbasaur", "dex_id": 1, "ranges": [[1, 2]], "probability": 0.7}], "headline": "x"}
    out = pokedex.localize_video(v, "ja")
    assert out["overall"]["display_name"] == "フシギダネ" and out["segments"][0]["display_name"] is None
    assert out["segments"][1]["display_name"] == "フシギダネ" and out["pokemon"][0]["genus"] == "たねポケモン"
    assert out["pokemon"][0]["ranges"] == [[1, 2]] and out["headline"] == "x"


def test_pokedex_list():
    rows = pokedex.pokedex_list("ko")
    assert [r["dex_id"] for r in rows] == list(pokedex.IDS) and rows[24]["display_name"] == "피카츄"
    assert rows[121]["name"] == "Mr. Mime" and rows[121]["slug"] == "mr-mime"


def test_package_data_globs_ship_every_facts_file():
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pokemon_classifier"]
    files = sorted((root / "src" / "pokemon_classifier" / "pokedex_data").iterdir())
    assert {"names.csv", "types.csv", "type_names.csv", "LICENSE-PokeAPI.md"} <= {f.name for f in files}
    for f in files:
        assert any(fnmatch.fnmatch(f"pokedex_data/{f.name}", g) for g in globs), f.name
