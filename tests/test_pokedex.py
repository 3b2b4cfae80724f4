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
