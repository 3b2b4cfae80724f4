"""clean: planted wrong labels, duplicates and broken files are found; apply/undo round trip is byte-identical."""

import hashlib
import shutil

import pandas as pd
import pytest

from conftest import CLASSES, draw_shape, make_dataset, run_cli
from pokemon_classifier import clean


def _tree_hash(data):
    h = hashlib.sha256()
    for p in sorted((data / "images").rglob("*")) + [data / "annotations.csv"]:
        if p.is_file():
            h.update(p.relative_to(data).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    import numpy as np

    data = make_dataset(tmp_path_factory.mktemp("clean") / "data", per_class=14, dups=1, clutter=False)
    rng = np.random.default_rng(7)
    extra = []
    # wrong labels: fresh circles (bulbasaur's shape) filed as squirtle and mew
    for fn in ("squirtle050.jpg", "mew050.jpg"):
        draw_shape(*CLASSES[1], rng=rng, clutter=False).save(data / "images" / fn, quality=92)
        extra.append((fn, 7 if fn.startswith("squirtle") else 151))
    # a byte-identical copy across classes
    shutil.copy(data / "images" / "pikachu003.jpg", data / "images" / "abra060.jpg")
    extra.append(("abra060.jpg", 63))
    with open(data / "annotations.csv", "a") as f:
        f.writelines(f"{n},{d}\n" for n, d in extra)
    (data / "images" / "charmander099.jpg").write_text("not an image")  # unreadable, not annotated
    return data


def test_finds_planted_problems(planted):
    code, out, err = run_cli("clean", planted, "--folds", "3", "--no-progress")
    assert code == 0, err
    cand = pd.read_csv(planted / "clean" / "candidates.csv")
    issues = cand[cand["finding"] == "label_issue"]
    top = list(issues.sort_values("rank")["img_name"][:6])
    assert "squirtle050.jpg" in top and "mew050.jpg" in top
    assert issues.set_index("img_name").loc["squirtle050.jpg", "suggested_id"] == 1
    cross = cand[cand["finding"] == "cross_class_duplicate"]
    assert {"abra060.jpg", "pikachu003.jpg"} <= set(cross["img_name"])
    assert "charmander099.jpg" in set(cand.loc[cand["finding"] == "unreadable", "img_name"])
    assert {"near_duplicate"} & set(cand["finding"])  # the planted resized copies
    page = (planted / "clean" / "report.html").read_text()
    assert "squirtle050.jpg" in page and "data:image/jpeg;base64," in page and "decisions.csv" in page


def test_apply_then_undo_is_byte_identical(planted, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(planted, data)
    start = _tree_hash(data)
    dec = tmp_path / "decisions.csv"
    dec.write_text("img_name,action,new_label\nsquirtle050.jpg,relabel,Bulbasaur\nmew050.jpg,relabel,bulbasaur\n"
                   "abra060.jpg,remove,\ncharmander099.jpg,remove,\npikachu001.jpg,keep,\n")
    code, out, err = run_cli("clean", data, "--apply", dec)
    assert code == 0, err
    ann = pd.read_csv(data / "annotations.csv")
    assert "squirtle050.jpg" not in set(ann["img_name"]) and "abra060.jpg" not in set(ann["img_name"])
    new = ann[ann["img_name"].str.startswith("bulbasaur")]
    assert len(new) == 17 and (new["pokemon_id"] == 1).all()
    assert (data / "quarantine" / "abra060.jpg").is_file() and (data / "quarantine" / "charmander099.jpg").is_file()
    changes = pd.read_csv(data / "clean" / "changes.csv")
    assert list(changes["action"]) == ["relabel", "relabel", "remove", "remove"]
    assert _tree_hash(data) != start
    code, out, err = run_cli("clean", data, "--undo", data / "clean" / "changes.csv")
    assert code == 0, err
    assert _tree_hash(data) == start


def test_crash_half_way_rolls_forward(planted, tmp_path, monkeypatch):
    data = tmp_path / "d"
    shutil.copytree(planted, data)
    dec = tmp_path / "decisions.csv"
    dec.write_text("img_name,action,new_label\nsquirtle050.jpg,relabel,bulbasaur\nabra060.jpg,remove,\n")
    real = clean.os.replace
    calls = {"n": 0}

    def crashing_replace(a, b):
        calls["n"] += "/images/" in str(a)
        if calls["n"] == 2:  # after the first image move, before the second and the annotations
            raise KeyboardInterrupt("simulated crash")
        return real(a, b)

    monkeypatch.setattr(clean.os, "replace", crashing_replace)
    with pytest.raises(KeyboardInterrupt):
        clean.apply(data, dec, echo=lambda *a: None)
    monkeypatch.setattr(clean.os, "replace", real)
    code, out, err = run_cli("clean", data, "--apply", tmp_path / "none.csv")  # any later call recovers first
    assert "finished an interrupted apply" in out and code == 2 and "not found" in err
    ann = pd.read_csv(data / "annotations.csv")
    names = set(ann["img_name"])
    assert all((data / "images" / n).is_file() for n in names)  # consistent: every row has its file
    assert "abra060.jpg" not in names and (data / "quarantine" / "abra060.jpg").is_file()


def test_confident_learning_by_hand():
    import numpy as np

    classes = np.array([1, 2])
    labels = np.array([1, 1, 1, 2, 2])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])
    # t1 = mean(.9,.8,.2)=.633, t2 = mean(.9,.7)=.8; row 2: p(1)=.2 < .633 and p(2)=.8 >= .8 -> suspect
    out = clean.label_issues(probs, labels, classes)
    assert list(out["row"]) == [2] and out["suggested"][0] == 2 and out["margin"][0] == pytest.approx(0.6)


def test_bad_decisions(planted, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(planted, data)
    dec = tmp_path / "dec.csv"
    dec.write_text("img_name,action,new_label\nsquirtle050.jpg,relabel,Pikachoo\n")
    code, _, err = run_cli("clean", data, "--apply", dec)
    assert code == 2 and "Pikachoo" in err
