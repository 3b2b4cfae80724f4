"""The 151 first-generation Pokemon: National Dex id <-> PokeAPI name <-> display name.

    >>> from pokemon_classifier import pokedex
    >>> pokedex.to_id("Mr. Mime"), pokedex.name(122), pokedex.display_name(29)
    (122, 'mr-mime', 'Nidoran♀')

Model labels are `dex_id - 1` (0..150), as in the original notebook.
"""

from __future__ import annotations

import re
import unicodedata

from pokemon_classifier.errors import UserError

# PokeAPI names, index i = dex id i + 1.
NAMES: tuple[str, ...] = tuple("""
bulbasaur ivysaur venusaur charmander charmeleon charizard squirtle wartortle blastoise caterpie
metapod butterfree weedle kakuna beedrill pidgey pidgeotto pidgeot rattata raticate
spearow fearow ekans arbok pikachu raichu sandshrew sandslash nidoran-f nidorina
nidoqueen nidoran-m nidorino nidoking clefairy clefable vulpix ninetales jigglypuff wigglytuff
zubat golbat oddish gloom vileplume paras parasect venonat venomoth diglett
dugtrio meowth persian psyduck golduck mankey primeape growlithe arcanine poliwag
poliwhirl poliwrath abra kadabra alakazam machop machoke machamp bellsprout weepinbell
victreebel tentacool tentacruel geodude graveler golem ponyta rapidash slowpoke slowbro
magnemite magneton farfetchd doduo dodrio seel dewgong grimer muk shellder
cloyster gastly haunter gengar onix drowzee hypno krabby kingler voltorb
electrode exeggcute exeggutor cubone marowak hitmonlee hitmonchan lickitung koffing weezing
rhyhorn rhydon chansey tangela kangaskhan horsea seadra goldeen seaking staryu
starmie mr-mime scyther jynx electabuzz magmar pinsir tauros magikarp gyarados
lapras ditto eevee vaporeon jolteon flareon porygon omanyte omastar kabuto
kabutops aerodactyl snorlax articuno zapdos moltres dratini dragonair dragonite mewtwo
mew
""".split())
assert len(NAMES) == 151 and len(set(NAMES)) == 151

NUM_CLASSES = len(NAMES)
IDS: tuple[int, ...] = tuple(range(1, NUM_CLASSES + 1))

_DISPLAY_SPECIAL = {29: "Nidoran♀", 32: "Nidoran♂", 83: "Farfetch'd", 122: "Mr. Mime"}


def _key(s: str) -> str:
    """Fold a spelling to letters and digits: 'Mr. Mime' -> 'mrmime', 'Nidoran♀' -> 'nidoranf'."""
    s = s.replace("♀", "f").replace("♂", "m")
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", s.lower())


_BY_KEY: dict[str, int] = {_key(n): i for i, n in enumerate(NAMES, start=1)}
_BY_KEY.update({"nidoranfemale": 29, "nidoranmale": 32})


def _check_id(dex_id: int) -> int:
    if not 1 <= int(dex_id) <= NUM_CLASSES:
        raise UserError(f"dex id {dex_id} is outside 1..{NUM_CLASSES}")
    return int(dex_id)


def name(dex_id: int) -> str:
    """PokeAPI name, e.g. 122 -> 'mr-mime' (also the image file-name prefix)."""
    return NAMES[_check_id(dex_id) - 1]


def display_name(dex_id: int) -> str:
    """Human name, e.g. 122 -> 'Mr. Mime', 29 -> 'Nidoran♀'."""
    dex_id = _check_id(dex_id)
    return _DISPLAY_SPECIAL.get(dex_id, NAMES[dex_id - 1].capitalize())


def to_id(spelling: str | int) -> int:
    """Map any spelling found in the wild ('MrMime', 'mr_mime', 'Nidoran♀', 'nidoran_f', 25, '25')."""
    if isinstance(spelling, int) or (isinstance(spelling, str) and spelling.strip().isdigit()):
        return _check_id(int(spelling))
    key = _key(str(spelling))
    if key not in _BY_KEY:
        raise UserError(f"unknown Pokemon name {spelling!r} (expected one of the 151 Gen-1 names)")
    return _BY_KEY[key]


_STEM = re.compile(r"^(?P<name>.+?)[ _-]?(?P<num>\d+)$")


def parse_filename(filename: str) -> tuple[int, int]:
    """Class and number of an image named in the original scheme: 'mr-mime007.jpg' -> (122, 7)."""
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    m = _STEM.match(stem)
    if not m:
        raise UserError(f"{filename}: file name is not <name><NNN>.<ext>")
    return to_id(m.group("name")), int(m.group("num"))


def id_from_filename(filename: str) -> int:
    """Class of an image named in the original scheme `<name><NNN>.<ext>` ('mr-mime007.jpg' -> 122)."""
    return parse_filename(filename)[0]


# ------------------------------------------------------------------ localized facts (PokéAPI data)
# Shipped in pokedex_data/ (tools/make_pokedex_data.py rebuilds them; licence beside them).
# Public tags are BCP 47; the files use PokéAPI's identifiers.
LANGUAGES: dict[str, str] = {  # tag -> the language's own name, for the page's picker
    "en": "English", "de": "Deutsch", "fr": "Français", "es": "Español", "es-419": "Español (Latinoamérica)",
    "it": "Italiano", "ja": "日本語", "ja-Hrkt": "にほんご (かな)", "ja-Latn": "Nihongo (rōmaji)",
    "ko": "한국어", "zh-Hans": "简体中文", "zh-Hant": "繁體中文",
}
DEFAULT_LANGUAGE = "en"
_FILE_TAG = {"ja-Latn": "ja-roma"}
_BY_LOWER = {t.lower(): t for t in LANGUAGES}
_HANT_REGIONS = {"tw", "hk", "mo"}
_LATAM = {"419", "mx", "ar", "bo", "cl", "co", "cr", "cu", "do", "ec", "gt", "hn", "ni", "pa", "pe", "pr", "py",
          "sv", "us", "uy", "ve"}


def normalize_language(tag: str | None) -> str | None:
    """A BCP 47 tag from the wild -> the supported tag that serves it best, or None.

    'de-AT' -> 'de', 'zh-TW' -> 'zh-Hant', 'zh' / 'zh-CN' -> 'zh-Hans', 'es-MX' -> 'es-419',
    'ja-JP' -> 'ja', 'pt-BR' -> None (the caller falls back, finally to English)."""
    if not tag:
        return None
    t = str(tag).strip().replace("_", "-").lower()
    if t in _BY_LOWER:
        return _BY_LOWER[t]
    parts = t.split("-")
    lang, rest = parts[0], parts[1:]
    if lang == "zh":
        if "hant" in rest or any(p in _HANT_REGIONS for p in rest):
            return "zh-Hant"
        return "zh-Hans"  # 'zh', 'zh-CN', 'zh-SG', 'zh-Hans-*': simplified is the default script
    if lang == "ja" and ("latn" in rest or "roma" in rest):
        return "ja-Latn"
    if lang == "ja" and ("hrkt" in rest or "kana" in rest):
        return "ja-Hrkt"
    if lang == "es" and any(p in _LATAM for p in rest):
        return "es-419"
    return _BY_LOWER.get(lang)


def parse_accept_language(header: str | None) -> list[str]:
    """`Accept-Language` -> tags by descending q (ties keep their order); q=0 and malformed parts dropped."""
    out = []
    for i, part in enumerate((header or "").split(",")):
        bits = [b.strip() for b in part.split(";")]
        if not bits[0]:
            continue
        q = 1.0
        for b in bits[1:]:
            if b.lower().startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = -1.0
        if 0 < q <= 1:
            out.append((-q, i, bits[0]))
    return [t for _, _, t in sorted(out)]


def negotiate_language(lang: str | None = None, accept_language: str | None = None) -> str:
    """The language to answer in: an explicit `?lang=` if supported, else the best `Accept-Language`
    entry we can serve, else English. A '*' entry means 'anything', which is English here."""
    explicit = normalize_language(lang)
    if explicit:
        return explicit
    for tag in parse_accept_language(accept_language):
        found = DEFAULT_LANGUAGE if tag == "*" else normalize_language(tag)
        if found:
            return found
    return DEFAULT_LANGUAGE


_FACTS: dict | None = None


def _read_data_csv(name: str) -> list[dict]:
    import csv
    import io
    from importlib import resources

    text = resources.files("pokemon_classifier").joinpath(f"pokedex_data/{name}").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _facts() -> dict:
    global _FACTS
    if _FACTS is None:
        names, genus, types, tnames = {}, {}, {}, {}
        for r in _read_data_csv("names.csv"):
            names[int(r["dex_id"]), r["lang"]] = r["name"]
            if r["genus"]:
                genus[int(r["dex_id"]), r["lang"]] = r["genus"]
        for r in _read_data_csv("types.csv"):
            types.setdefault(int(r["dex_id"]), []).append(r["type"])
        for r in _read_data_csv("type_names.csv"):
            tnames[r["type"], r["lang"]] = r["name"]
        _FACTS = {"names": names, "genus": genus, "types": types, "type_names": tnames}
    return _FACTS


def _file_tag(lang: str) -> str:
    tag = normalize_language(lang) or DEFAULT_LANGUAGE
    return _FILE_TAG.get(tag, tag.lower())


def localized_name(dex_id: int, lang: str = DEFAULT_LANGUAGE) -> str:
    """Species name in `lang` (122, 'de') -> 'Pantimos'; unsupported languages give English."""
    f = _facts()["names"]
    dex_id = _check_id(dex_id)
    return f.get((dex_id, _file_tag(lang))) or f[dex_id, "en"]


def genus(dex_id: int, lang: str = DEFAULT_LANGUAGE) -> str:
    """The 'category' (25, 'en') -> 'Mouse Pokémon'; English where the language has none (rōmaji)."""
    f = _facts()["genus"]
    dex_id = _check_id(dex_id)
    return f.get((dex_id, _file_tag(lang))) or f.get((dex_id, "en"), "")


def types(dex_id: int) -> list[str]:
    """Type identifiers, slot 1 first, as in today's games: 35 -> ['fairy'], 81 -> ['electric', 'steel']."""
    return list(_facts()["types"][_check_id(dex_id)])


def type_name(type_id: str, lang: str = DEFAULT_LANGUAGE) -> str:
    f = _facts()["type_names"]
    return f.get((type_id, _file_tag(lang))) or f.get((type_id, "en"), type_id.capitalize())


def facts(dex_id: int, lang: str = DEFAULT_LANGUAGE) -> dict:
    """Everything the page shows about one Pokémon, in `lang`."""
    return {"dex_id": _check_id(dex_id), "display_name": localized_name(dex_id, lang),
            "english_name": localized_name(dex_id, "en"), "genus": genus(dex_id, lang),
            "types": [{"id": t, "name": type_name(t, lang)} for t in types(dex_id)]}


def localize_result(result: dict, lang: str = DEFAULT_LANGUAGE) -> dict:
    """Add `lang`, `display_name`, `english_name`, `genus`, `types` to a prediction and to each top-k entry.

    An 'unknown' verdict gets no facts (None / []), but its guesses are still localized. Returns a new
    dict; the existing keys (`name` stays English, `dex_id`, `probability`, ...) are left as they were."""
    lang = normalize_language(lang) or DEFAULT_LANGUAGE
    out = dict(result)
    if out.get("dex_id") is not None:
        out.update(facts(out["dex_id"], lang))
    else:
        out.update({"display_name": None, "english_name": None, "genus": None, "types": []})
    if "topk" in out:
        out["topk"] = [{**t, **facts(t["dex_id"], lang)} for t in out["topk"]]
    out["lang"] = lang
    return out


def localize_video(result: dict, lang: str = DEFAULT_LANGUAGE) -> dict:
    """The same for a video verdict: `overall`, each segment, and each entry of a `pokemon` list if any."""
    lang = normalize_language(lang) or DEFAULT_LANGUAGE
    out = dict(result)
    if isinstance(out.get("overall"), dict):
        out["overall"] = localize_result(out["overall"], lang)
    for key in ("segments", "pokemon"):
        if isinstance(out.get(key), list):
            out[key] = [{**s, **facts(s["dex_id"], lang)} if s.get("dex_id") is not None
                        else {**s, "display_name": None, "english_name": None, "genus": None, "types": []}
                        for s in out[key]]
    out["lang"] = lang
    return out


def pokedex_list(lang: str = DEFAULT_LANGUAGE) -> list[dict]:
    """All 151 with their facts in `lang`, in dex order (the page's 'pick the right one' list);
    `slug` is the PokéAPI name ('mr-mime'), for `serve --artwork-url` templates with {name}."""
    return [{"name": display_name(i), "slug": name(i), **facts(i, lang)} for i in IDS]
