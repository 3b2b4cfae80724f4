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
