"""The story of a clip: segments, the ordered list of Pokemon seen, the headline."""

from pokemon_classifier.video import tell


def _frame(dex, p=0.99):
    if dex is None:
        return {"dex_id": None, "name": "unknown", "probability": 0.3, "unknown": True}
    return {"dex_id": dex, "name": {25: "Pikachu", 6: "Charizard", 94: "Gengar"}[dex], "probability": p, "unknown": False}


def _clip(plan, step=0.5):
    frames = [_frame(d) for d, n in plan for _ in range(n)]
    return [i * step for i in range(len(frames))], frames


def test_three_pokemon_with_blank_fades_tell_their_story_in_order():
    times, frames = _clip([(None, 2), (25, 4), (None, 2), (6, 4), (None, 2), (94, 4), (None, 1)])
    s = tell(times, frames, 0.5)
    assert [p["name"] for p in s["pokemon"]] == ["Pikachu", "Charizard", "Gengar"]
    assert s["pokemon"][0]["ranges"] == [[1.0, 3.0]]
    assert s["pokemon"][2]["ranges"] == [[7.0, 9.0]]
    assert s["headline"] == "Pikachu 1–3 s, Charizard 4–6 s, Gengar 7–9 s"
    assert [g["unknown"] for g in s["segments"]] == [True, False, True, False, True, False, True]


def test_blips_are_dropped_and_short_gaps_merged():
    times, frames = _clip([(25, 4), (94, 1), (25, 3), (None, 1), (25, 2)])
    s = tell(times, frames, 0.5, min_duration=1.0, max_gap=1.0)
    assert [p["name"] for p in s["pokemon"]] == ["Pikachu"]  # the one-frame Gengar is a blip
    assert s["pokemon"][0]["ranges"] == [[0.0, 5.5]]


def test_a_long_gap_gives_two_ranges_of_one_pokemon():
    times, frames = _clip([(25, 3), (None, 6), (25, 3)])
    s = tell(times, frames, 0.5)
    assert s["pokemon"][0]["ranges"] == [[0.0, 1.5], [4.5, 6.0]]
    assert s["headline"] == "Pikachu 0–1.5 s, 4.5–6 s"


def test_nothing_confident_says_so():
    times, frames = _clip([(None, 10)])
    s = tell(times, frames, 0.5)
    assert s["pokemon"] == [] and s["headline"] == "no Gen-1 Pokémon found"


def test_one_frame_clip_is_not_a_blip():
    s = tell([0.0], [_frame(25)], 0.5)
    assert [p["name"] for p in s["pokemon"]] == ["Pikachu"]
    assert s["pokemon"][0]["probability"] == 0.99
