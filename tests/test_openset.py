"""Open set: generated degenerate pictures, the tune/report split of negatives."""

import numpy as np
import pandas as pd

from pokemon_classifier import openset


def test_every_degenerate_kind_is_a_distinct_rgb_picture():
    images, kinds = openset.degenerate_set(3, seed=1, size=64)
    assert len(images) == 3 * len(openset.DEGENERATE_KINDS) and set(kinds) == set(openset.DEGENERATE_KINDS)
    for im in images:
        assert im.mode == "RGB" and im.size == (64, 64)
    arrays = [np.asarray(im) for im in images]
    # different seeds give different pictures (tune and report sets never share one)
    other, _ = openset.degenerate_set(3, seed=2, size=64)
    assert sum(np.array_equal(a, np.asarray(b)) for a, b in zip(arrays, other)) < len(arrays) // 4
    assert np.asarray(images[kinds.index("noise")]).std() > 20
    assert np.asarray(images[kinds.index("blank")]).std() == 0


def test_negatives_split_halves_each_kind_and_keeps_a_species_on_one_side():
    rows = [(f"photo{i:03d}.jpg", "photo") for i in range(40)]
    rows += [(f"gen3art{d}.jpg", "gen3-art") for d in range(252, 282)]
    rows += [(f"gen3icon{d}.jpg", "gen3-icon") for d in range(252, 282)]
    t = pd.DataFrame(rows, columns=["img_name", "kind"])
    t["half"] = openset.split_negatives(t)
    counts = t.groupby(["kind", "half"]).size()
    assert counts["photo"]["tune"] == counts["photo"]["report"] == 20
    assert counts["gen3-art"]["tune"] == 15
    art = t[t.kind == "gen3-art"].set_index(t[t.kind == "gen3-art"].img_name.str[7:10])["half"]
    icon = t[t.kind == "gen3-icon"].set_index(t[t.kind == "gen3-icon"].img_name.str[8:11])["half"]
    assert (art.sort_index() == icon.sort_index()).all()
    # the same table always splits the same way
    assert (openset.split_negatives(t) == t["half"]).all()
