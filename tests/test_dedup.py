import numpy as np
import pandas as pd

from conftest import run_cli
from pokemon_classifier import dedup


def test_near_pairs_matches_bruteforce():
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    h[10] = h[3] ^ np.uint64(0b111)  # distance 3
    r, c = dedup.near_pairs(h, 4, chunk=64)
    brute = {(i, j) for i in range(300) for j in range(i + 1, 300) if bin(int(h[i]) ^ int(h[j])).count("1") <= 4}
    assert set(zip(r.tolist(), c.tolist())) == brute and (3, 10) in brute


def test_union_find_is_transitive():
    a = np.array([0b0, 0b1111, 0b11111111, 0xFFFFFFFF00000000], dtype=np.uint64)  # 0-1 (4), 1-2 (4), 0-2 (8)
    g = dedup.group_ids(a, a.copy(), threshold=4)
    assert g[0] == g[1] == g[2] != g[3]


def test_dedup_cli_finds_planted_duplicates_and_caches(synth_data):
    code, out, err = run_cli("dedup", synth_data)
    assert code == 0, err
    df = pd.read_csv(synth_data / "dedup.csv")
    assert list(df.columns) == ["img_name", "group", "pokemon_id", "group_size"]
    by_name = df.set_index("img_name")["group"]
    # conftest plants <name>013/014 as resized re-encodes of <name>001/002
    for name in ("bulbasaur", "pikachu", "mew"):
        assert by_name[f"{name}013.jpg"] == by_name[f"{name}001.jpg"]
        assert by_name[f"{name}014.jpg"] == by_name[f"{name}002.jpg"]
    assert "12 near-duplicate groups" in out
    code, out2, _ = run_cli("dedup", synth_data)
    assert code == 0 and out2.splitlines()[0] == out.splitlines()[0]


def test_cross_class_group_reported(synth_data):
    import shutil

    shutil.copy(synth_data / "images" / "abra005.jpg", synth_data / "images" / "mew020.jpg")
    with open(synth_data / "annotations.csv", "a") as f:
        f.write("mew020.jpg,151\n")
    code, out, _ = run_cli("dedup", synth_data)
    assert code == 0
    assert "1 groups span more than one class" in out and "mew020.jpg (Mew)" in out


def test_bad_threshold(synth_data):
    code, _, err = run_cli("dedup", synth_data, "--threshold", "99")
    assert code == 2 and "--threshold" in err


def test_shared_data_dedup_counts(shared_data, tmp_path):
    """SOURCES.md reports 88 groups / 184 images with a similar content-box hash; ours must be close."""
    groups = dedup.find_groups(shared_data, progress=False)
    s = dedup.summarize(groups)
    assert 80 <= s["groups"] <= 110 and 170 <= s["images_in_groups"] <= 230
    names = {n for members in s["cross_class"] for n in members}
    assert {"grimer020.jpg", "muk039.jpg"} <= names
