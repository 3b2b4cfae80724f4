"""clean: planted wrong labels, duplicates and broken files are found; apply/undo round trip is byte-identical."""

import hashlib
import os
import shutil

import pandas as pd
import pytest

from helpers import CLASSES, assert_one_line_error, draw_shape, make_dataset, run_cli, stale_temp_files
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
    assert "1 unreadable files" in out and "label-issue candidates (confident learning, 3-fold)" in out


def test_find_candidates_tells_its_steps_to_on_step_and_prints_nothing(planted, monkeypatch, capsys):
    row = clean.candidate("unreadable", "charmander099.jpg", 4, "not an image")
    monkeypatch.setattr(clean, "broken_files", lambda *a: ([row], {"charmander099.jpg"}))
    monkeypatch.setattr(clean, "duplicates", lambda *a: ([], 0, 0))
    monkeypatch.setattr(clean, "feature_findings", lambda *a: ([], []))
    said = []
    cand = clean.find_candidates(planted, folds=3, progress=False, on_step=said.append)
    assert list(cand["img_name"]) == ["charmander099.jpg"]
    assert said == ["1 unreadable files", "0 duplicate groups (0 across classes)",
                    "0 label-issue candidates (confident learning, 3-fold)"]
    clean.find_candidates(planted, folds=3, progress=False)
    assert capsys.readouterr().out == ""  # the clean command passes print


def test_apply_then_undo_is_byte_identical(planted, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(planted, data)
    start = _tree_hash(data)
    # a manifest (as scrape and the shared data write): kind and provenance follow a relabel's rename
    ann0 = pd.read_csv(data / "annotations.csv")
    ann0.assign(name=ann0["img_name"].str.replace(r"\d+\.jpg$", "", regex=True),
                kind=["sprite" if n == "squirtle050.jpg" else "scraped" for n in ann0["img_name"]]
                ).to_csv(data / "manifest.csv", index=False)
    manifest0 = (data / "manifest.csv").read_bytes()
    dec = tmp_path / "decisions.csv"
    dec.write_text("img_name,action,new_label\nsquirtle050.jpg,relabel,Bulbasaur\nmew050.jpg,relabel,bulbasaur\n"
                   "abra060.jpg,remove,\ncharmander099.jpg,remove,\npikachu001.jpg,keep,\n")
    code, out, err = run_cli("clean", data, "--apply", dec)
    assert code == 0, err
    ann = pd.read_csv(data / "annotations.csv")
    m = pd.read_csv(data / "manifest.csv").set_index("img_name")
    assert "squirtle050.jpg" not in m.index and set(ann["img_name"]) <= set(m.index)
    renamed = m[m["kind"] == "sprite"]
    assert len(renamed) == 1 and renamed["pokemon_id"].iloc[0] == 1 and renamed["name"].iloc[0] == "bulbasaur"
    assert "squirtle050.jpg" not in set(ann["img_name"]) and "abra060.jpg" not in set(ann["img_name"])
    new = ann[ann["img_name"].str.startswith("bulbasaur")]
    assert len(new) == 17 and (new["pokemon_id"] == 1).all()
    assert (data / "quarantine" / "abra060.jpg").is_file() and (data / "quarantine" / "charmander099.jpg").is_file()
    (journal,) = clean.journals(data)  # one apply, one journal
    changes = pd.read_csv(journal)
    assert list(changes["action"]) == ["relabel", "relabel", "remove", "remove"]
    assert _tree_hash(data) != start
    code, out, err = run_cli("clean", data, "--undo", journal)  # the explicit form still works
    assert code == 0, err
    assert _tree_hash(data) == start and (data / "manifest.csv").read_bytes() == manifest0


def test_crash_half_way_rolls_forward(planted, tmp_path, monkeypatch):
    data = tmp_path / "d"
    shutil.copytree(planted, data)
    dec = tmp_path / "decisions.csv"
    dec.write_text("img_name,action,new_label\nsquirtle050.jpg,relabel,bulbasaur\nabra060.jpg,remove,\n")
    real = os.replace
    calls = {"n": 0}

    def crashing_replace(a, b):
        calls["n"] += "/images/" in str(a)
        if calls["n"] == 2:  # after the first image move, before the second and the annotations
            raise KeyboardInterrupt("simulated crash")
        return real(a, b)

    monkeypatch.setattr(os, "replace", crashing_replace)  # what clean_apply moves files with
    with pytest.raises(KeyboardInterrupt):
        clean.apply(data, dec)
    monkeypatch.setattr(os, "replace", real)
    code, out, err = run_cli("clean", data, "--apply", tmp_path / "none.csv")  # any later call recovers first
    assert "finished an interrupted apply" in out and code == 2 and "not found" in err
    ann = pd.read_csv(data / "annotations.csv")
    names = set(ann["img_name"])
    assert all((data / "images" / n).is_file() for n in names)  # consistent: every row has its file
    assert "abra060.jpg" not in names and (data / "quarantine" / "abra060.jpg").is_file()


def test_apply_and_undo_return_their_lines_and_print_nothing(planted, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(planted, data)
    dec = tmp_path / "decisions.csv"
    dec.write_text("img_name,action,new_label\nabra060.jpg,remove,\n")
    done = clean.apply(data, dec)
    assert done.lines[0].startswith("applied 0 relabels and 1 removals") and done.journal.is_file()
    back = clean.undo(data)
    assert back.undone == 1 and back.lines[0].startswith("undid ") and back.lines[0].endswith(str(done.journal))
    assert capsys.readouterr().out == ""  # the clean command prints them

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


# ------------------------------------------------------------------ journals, undo, bad input

KILL_AFTER_FIRST_MOVE = """
import os, signal, sys
from pokemon_classifier import cli
real, moved = os.replace, [0]
def replace(a, b):
    if "/images/" in str(a):
        moved[0] += 1
        if moved[0] == 2:  # the first image of this apply has moved, the second has not
            os.kill(os.getpid(), signal.SIGKILL)
    return real(a, b)
os.replace = replace
sys.exit(cli.main(sys.argv[1:]))
"""


def _decisions(path, text):
    path.write_text("img_name,action,new_label\n" + text)
    return path


def test_three_applies_with_kill_inside_second_then_undo_all(planted, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pokemon_classifier

    data = tmp_path / "d"
    shutil.copytree(planted, data)
    start = _tree_hash(data)
    ann0 = (data / "annotations.csv").read_bytes()
    d1 = _decisions(tmp_path / "d1.csv", "squirtle050.jpg,relabel,bulbasaur\nabra060.jpg,remove,\n")
    d2 = _decisions(tmp_path / "d2.csv", "mew050.jpg,relabel,bulbasaur\npikachu001.jpg,remove,\n"
                                         "pikachu002.jpg,relabel,abra\n")
    d3 = _decisions(tmp_path / "d3.csv", "bulbasaur001.jpg,relabel,squirtle\ncharmander099.jpg,remove,\n")
    assert run_cli("clean", data, "--apply", d1)[0] == 0
    env = dict(os.environ, PYTHONPATH=str(Path(pokemon_classifier.__file__).parents[1]))
    r = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_MOVE, "clean", str(data), "--apply", str(d2)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr  # really killed inside the apply
    assert not (data / "images" / "mew050.jpg").exists() and (data / "images" / "pikachu001.jpg").exists()
    code, out, err = run_cli("clean", data, "--apply", d3)
    assert code == 0, err
    assert "finished an interrupted apply" in out
    assert len(list((data / "clean" / "journal").glob("*.csv"))) >= 3
    code, out, err = run_cli("clean", data, "--undo", "--all")
    assert code == 0, err
    assert _tree_hash(data) == start
    assert (data / "annotations.csv").read_bytes() == ann0
    assert not [p for p in (data / "quarantine").rglob("*") if p.is_file()]
    code, _, err = run_cli("clean", data, "--undo")
    assert_one_line_error(code, err, "nothing to undo")


def test_undo_goes_back_one_apply_at_a_time(planted, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(planted, data)
    h0 = _tree_hash(data)
    assert run_cli("clean", data, "--apply", _decisions(tmp_path / "a.csv", "abra060.jpg,remove,\n"))[0] == 0
    h1 = _tree_hash(data)
    # the same second, the same decisions file name: the journals must not overwrite each other
    assert run_cli("clean", data, "--apply", _decisions(tmp_path / "a.csv", "mew050.jpg,relabel,abra\n"))[0] == 0
    assert _tree_hash(data) != h1
    code, out, err = run_cli("clean", data, "--undo")
    assert code == 0, err
    assert _tree_hash(data) == h1
    code, out, err = run_cli("clean", data, "--undo")
    assert code == 0, err
    assert _tree_hash(data) == h0


def test_undo_of_an_older_journal_first_is_refused(planted, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(planted, data)
    assert run_cli("clean", data, "--apply", _decisions(tmp_path / "a.csv", "abra060.jpg,remove,\n"))[0] == 0
    assert run_cli("clean", data, "--apply", _decisions(tmp_path / "b.csv", "mew050.jpg,remove,\n"))[0] == 0
    first = clean.journals(data)[0]
    code, _, err = run_cli("clean", data, "--undo", first)
    assert_one_line_error(code, err, first.name, "later")
    assert (data / "quarantine" / "mew050.jpg").is_file()


@pytest.mark.parametrize("flag,content", [
    *(("--undo", c) for c in (b"", b"a,b\n1,2\n", b"\xff\xfe\x00bad", b"img_name,pokemon_id\nx.jpg,1\n")),
    *(("--apply", c) for c in (b"", b"\xff\xfe\x00\x81 not utf-8\n", b"img_name,action,new_label\na,b,c,d,e\n",
                               b"img_name,action\nabra060.jpg,remove\nmew050.jpg,remove,x,y\n", b"name,what\n")),
])
def test_bad_changes_or_decisions_files_are_one_line_errors(planted, tmp_path, flag, content):
    """--undo with an empty or foreign changes file, --apply with a broken decisions file: one line
    naming the file, nothing in the data folder touched."""
    data = tmp_path / "d"
    shutil.copytree(planted, data)
    start = _tree_hash(data)
    bad = tmp_path / "given.csv"
    bad.write_bytes(content)
    code, _, err = run_cli("clean", data, flag, bad)
    assert_one_line_error(code, err, str(bad))
    assert _tree_hash(data) == start


def test_decisions_cannot_escape_images(planted, tmp_path):
    data = tmp_path / "ds" / "d"
    shutil.copytree(planted, data)
    secret = tmp_path / "ds" / "secret.txt"
    secret.write_text("private")
    start = _tree_hash(data)
    dec = _decisions(tmp_path / "dec.csv", "abra060.jpg,remove,\n../../secret.txt,relabel,pikachu\n")
    code, _, err = run_cli("clean", data, "--apply", dec)
    assert_one_line_error(code, err, str(dec), "row 3")
    assert secret.read_text() == "private" and _tree_hash(data) == start
    assert not (data / "clean" / "journal").exists() or not list((data / "clean" / "journal").iterdir())




@pytest.mark.parametrize("content", [b"img_name,pokemon_id\n", b"", b"img_name,pokemon_id\n\xff\xfe.jpg,1\n",
                                     b"img_name,pokemon_id\nabra001.jpg,1,9\nabra002.jpg,1\n"])
def test_clean_on_empty_or_unreadable_annotations(tmp_path, content):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations.csv").write_bytes(content)
    code, _, err = run_cli("clean", tmp_path, "--no-progress")
    assert_one_line_error(code, err, "annotations.csv")


def test_stale_temp_files_of_a_killed_clean_are_removed(planted, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(planted, data)
    removed = stale_temp_files([data / ".annotations.csv.ab12cd34.tmp", data / "clean" / ".report.html.x_y9z8w7.tmp"],
                               [data / ".annotations.csv.tmp", data / "clean" / "my.tmp"])
    code, _, err = run_cli("clean", data, "--apply", _decisions(tmp_path / "k.csv", "abra060.jpg,keep,\n"))
    assert code == 0, err
    assert removed()
