import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from helpers import CLASSES, assert_one_line_error, kill_at_rename, run_cli, stale_temp_files
from pokemon_classifier import annotations
from pokemon_classifier.annotations import read_annotations
from pokemon_classifier.errors import UserError


def test_annotate_end_to_end(synth_data):
    (synth_data / "annotations.csv").unlink()
    (synth_data / "images" / "pikachu099.jpg").write_text("not an image")  # unreadable -> reported, kept
    (synth_data / "images" / "mew050.png").write_bytes(b"")
    code, out, err = run_cli("annotate", synth_data, "--min-per-class", "100")
    assert code == 0, err
    df = pd.read_csv(synth_data / "annotations.csv")
    assert list(df.columns) == ["img_name", "pokemon_id"]
    assert set(df["pokemon_id"]) == set(CLASSES)
    assert "pikachu099.jpg" not in set(df["img_name"]) and "mew050.png" not in set(df["img_name"])
    assert (synth_data / "images" / "pikachu099.jpg").exists()  # never deleted
    report = pd.read_csv(synth_data / "annotate_report.csv")
    assert set(report["img_name"]) == {"pikachu099.jpg", "mew050.png"}
    assert "warning: Pikachu has 14 images" in out
    assert (synth_data / "class_distribution.png").stat().st_size > 1000
    # overview sorted ascending
    lines = [ln for ln in out.splitlines() if ln.startswith("  ") and ln.strip()[-1].isdigit()]
    counts = [int(ln.split()[-1]) for ln in lines]
    assert counts == sorted(counts)


def test_annotate_returns_its_summary_and_prints_nothing(synth_data, capsys):
    (synth_data / "annotations.csv").unlink()
    done = annotations.annotate(synth_data, min_per_class=100, workers=1, plot=False)
    assert set(done.df["pokemon_id"]) == set(CLASSES) and done.lines[0] == "images per class (ascending):"
    assert any(ln.startswith("warning: Pikachu has ") for ln in done.lines)
    assert done.lines[-1].startswith(f"wrote {synth_data / 'annotations.csv'}: ")
    assert capsys.readouterr().out == ""  # the annotate command prints the summary

def test_annotate_missing_folder_is_one_line_error(tmp_path):
    code, out, err = run_cli("annotate", tmp_path / "nowhere")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_from_folders_imports_kaggle_layout(tmp_path):
    src = tmp_path / "PokemonData"
    for folder, color in (("Pikachu", (250, 220, 0)), ("MrMime", (200, 50, 50)), ("Nidoran♀", (90, 90, 200))):
        (src / folder).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (32 + k, 32), color).save(src / folder / f"{k:032x}.jpg")
    Image.new("RGB", (32, 32)).save(src / "Pikachu" / "weird.asp", "PNG")  # real PNG, odd extension
    code, out, err = run_cli("annotate", "--from-folders", src, "--out", tmp_path / "data")
    assert code == 0, err
    df = read_annotations(tmp_path / "data")
    assert sorted(df["pokemon_id"].unique()) == [25, 29, 122]
    assert (tmp_path / "data" / "images" / "mr-mime001.jpg").is_file()
    assert (tmp_path / "data" / "images" / "nidoran-f003.jpg").is_file()
    assert any(n.startswith("pikachu") and n.endswith(".png") for n in df["img_name"])


def test_from_folders_unknown_class(tmp_path):
    (tmp_path / "src" / "Alolan Sandslash").mkdir(parents=True)
    code, _, err = run_cli("annotate", "--from-folders", tmp_path / "src", "--out", tmp_path / "d")
    assert code == 2 and "Alolan Sandslash" in err


@pytest.mark.parametrize("content,msg", [
    ("name,id\na.jpg,1\n", "header"), ("img_name,pokemon_id\nabra001.jpg,152\n", "1..151"),
    ("img_name,pokemon_id\n../etc/passwd,1\n", "inside images/"),
    ("img_name,pokemon_id\n/etc/passwd,1\n", "inside images/"),
    ("img_name,pokemon_id\nabra001.jpg,1\nabra001.jpg,1\n", "twice"),
])
def test_read_annotations_validates(tmp_path, content, msg):
    (tmp_path / "annotations.csv").write_text(content)
    with pytest.raises(UserError, match=msg):
        read_annotations(tmp_path)


# ------------------------------------------------------------------ the Kaggle layout, odd names, kills

KAGGLE_SPELLINGS = {83: "Farfetchd", 122: "MrMime"}  # how the Kaggle set spells them


def _kaggle_tree(root):
    """PokemonData/<Name>/*.jpg as in the Kaggle "7,000 labelled Pokemon" set: 150 folders, one of
    them Alolan Sandslash, none for Nidoran (female or male)."""
    from pokemon_classifier import pokedex

    src = root / "PokemonData"
    for dex in pokedex.IDS:
        if dex in (29, 32):
            continue
        d = src / KAGGLE_SPELLINGS.get(dex, pokedex.display_name(dex))
        d.mkdir(parents=True)
        Image.new("RGB", (24, 24), (dex, 255 - dex, (dex * 7) % 256)).save(d / f"{dex:08x}.jpg")
    (src / "Alolan Sandslash").mkdir()
    Image.new("RGB", (24, 24), (1, 2, 3)).save(src / "Alolan Sandslash" / "a.jpg")
    assert len([d for d in src.iterdir()]) == 150
    return src


def test_from_folders_kaggle_layout_skips_unknown_and_names_empty_classes(tmp_path):
    src = _kaggle_tree(tmp_path)
    code, out, err = run_cli("annotate", "--from-folders", src, "--out", tmp_path / "data")
    assert code == 0, err
    df = read_annotations(tmp_path / "data")
    assert len(df) == 149 and df["pokemon_id"].nunique() == 149
    assert not {29, 32} & set(df["pokemon_id"])
    warn = [ln for ln in out.splitlines() if ln.startswith("warning:") and "Alolan Sandslash" in ln]
    assert len(warn) == 1 and "not Gen-1" in warn[0]
    empty = [ln for ln in out.splitlines() if "no images" in ln and "classes" in ln]
    assert len(empty) == 1 and "Nidoran♀" in empty[0] and "Nidoran♂" in empty[0] and "Pikachu" not in empty[0]


def test_from_folders_strict_refuses_unknown_folders(tmp_path):
    from pokemon_classifier.annotations import import_from_folders

    src = _kaggle_tree(tmp_path)
    with pytest.raises(UserError, match="Alolan Sandslash"):
        import_from_folders(src, tmp_path / "data", strict=True)
    assert not (tmp_path / "data" / "images").exists() or not list((tmp_path / "data" / "images").iterdir())


def test_annotate_with_a_file_name_that_is_not_utf8(synth_data):
    import os

    (synth_data / "annotations.csv").unlink()
    bad = os.fsdecode(b"pikachu\xff777.jpg")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(synth_data / "images" / bad, "JPEG")
    code, out, err = run_cli("annotate", synth_data)
    assert code == 0, err
    df = pd.read_csv(synth_data / "annotations.csv")
    assert set(df["pokemon_id"]) == set(CLASSES)
    assert "pikachu\\xff777.jpg" in out  # named, escaped, not lost
    assert (synth_data / "images" / bad).exists()
    assert "pikachu\\xff777.jpg" in (synth_data / "annotate_report.csv").read_text(encoding="utf-8")


def test_stale_temp_files_of_killed_runs_are_removed(synth_data):
    removed = stale_temp_files([synth_data / ".class_distribution.png.k3j_x9ab.tmp", synth_data / ".annotations.csv.a1b2c3d4.tmp"],
                               [synth_data / ".notes.tmp", synth_data / ".class_distribution.png.bak", synth_data / "mine.tmp"])
    code, out, err = run_cli("annotate", synth_data)
    assert code == 0, err
    assert removed()


SLOW_DECODE = """
import sys, time
import PIL.Image
real = PIL.Image.open
def slow_open(*a, **k):  # a slow disk: every decode takes a while, so the kill lands mid-run
    time.sleep(0.5)
    return real(*a, **k)
PIL.Image.open = slow_open
from pokemon_classifier import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def _children(pid):
    import os

    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def orphans_after_kill_9(*cli_args: str) -> list[int]:
    """Run the CLI with slow image decoding, SIGKILL it while its two pool workers are busy, and return
    the workers still alive 20 s later (none: they die with their parent)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import pokemon_classifier

    env = dict(os.environ, PYTHONPATH=str(Path(pokemon_classifier.__file__).parents[1]))
    p = subprocess.Popen([sys.executable, "-c", SLOW_DECODE, *cli_args, "--workers", "2"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids = []
    try:
        t0 = time.time()
        while time.time() - t0 < 60 and len(kids) < 2:
            kids = _children(p.pid)
            time.sleep(0.1)
        assert len(kids) >= 2, "the worker pool never started"
        time.sleep(1.0)  # workers busy
        p.send_signal(signal.SIGKILL)
        p.wait()
        t0 = time.time()
        while time.time() - t0 < 20 and any(_alive(k) for k in kids):
            time.sleep(0.1)
        return [k for k in kids if _alive(k)]
    finally:
        for k in _children(p.pid) + kids:
            if _alive(k):
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_annotate_leaves_no_worker_processes(synth_data):
    for i in range(100):  # enough images for the process pool
        Image.new("RGB", (40, 40), (i, i, i)).save(synth_data / "images" / f"abra{200 + i:03d}.jpg")
    survivors = orphans_after_kill_9("annotate", str(synth_data))
    assert not survivors, f"orphaned workers: {survivors}"


@pytest.mark.parametrize("content", ["img_name,pokemon_id\nabra001.jpg,152\n", "img_name,pokemon_id\na.jpg,1\nb.jpg,2,3\n"])
def test_read_annotations_messages_are_one_plain_line(tmp_path, content):
    (tmp_path / "annotations.csv").write_text(content)
    with pytest.raises(UserError) as e:
        read_annotations(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "np.int64" not in msg and str(tmp_path / "annotations.csv") in msg


def test_from_folders_strict_flag_on_the_command_line(tmp_path):
    """`annotate --from-folders SRC --out D --strict` refuses the tree (one line naming the folder)."""
    src = _kaggle_tree(tmp_path)
    code, out, err = run_cli("annotate", "--from-folders", src, "--out", tmp_path / "data", "--strict")
    assert_one_line_error(code, err, "Alolan Sandslash")
    assert not (tmp_path / "data" / "annotations.csv").exists()


# ------------------------------------------------------------------ annotate --add: concurrent runs, kill -9
_ADD = kill_at_rename(1) + """
from pokemon_classifier.cli import main
sys.exit(main(["annotate", sys.argv[2], "--add", sys.argv[3]]))
"""


def _add_setup(tmp_path, n=6):
    import io

    import numpy as np

    from pokemon_classifier.collect import Collector
    from pokemon_classifier.synthetic import draw_shape, make_dataset

    data = make_dataset(tmp_path / "data", per_class=2)
    col = Collector(tmp_path / "collected")
    for i in range(n):
        b = io.BytesIO()
        draw_shape("diamond", (240, 210, 30), rng=np.random.default_rng(i)).save(b, "PNG")
        col.save(b.getvalue(), 25 if i % 2 else 7)
    return data, tmp_path / "collected"


def _add_run(kill_at, data, src):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run([sys.executable, "-c", _ADD, str(kill_at), str(data), str(src)], env=env,
                          capture_output=True, text=True, timeout=120)


def _each_picture_once(data, src, before: int):
    import pandas as pd

    from pokemon_classifier.fileio import sha256_file

    df = annotations.read_annotations(data)
    files = sorted(p.name for p in (data / "images").iterdir())
    assert sorted(df.img_name) == files, "a picture without a row or a row without a picture"
    assert not list(data.rglob("*.tmp"))
    assert len(df) == before + len(pd.read_csv(src / "annotations.csv"))
    hashes = [sha256_file(data / "images" / n) for n in df.img_name]
    assert len(set(hashes)) == len(hashes), "a picture stored twice"


def test_annotate_add_killed_at_every_write_is_completed_by_a_rerun(tmp_path):
    import signal

    data, src = _add_setup(tmp_path)
    before = len(annotations.read_annotations(data))
    pristine = tmp_path / "pristine"
    shutil.copytree(data, pristine)
    for kill_at in range(1, 6 + 2):  # 6 pictures, then the rows
        shutil.rmtree(data)
        shutil.copytree(pristine, data)
        r = _add_run(kill_at, data, src)
        assert r.returncode == -signal.SIGKILL, r.stderr
        r = _add_run(0, data, src)  # the rerun, not killed
        assert r.returncode == 0 and "added 6 pictures" in r.stdout, (kill_at, r.stdout, r.stderr)
        _each_picture_once(data, src, before)
        assert "added 0 pictures" in _add_run(0, data, src).stdout


def test_two_annotate_add_runs_at_once_store_each_picture_once(tmp_path):
    import subprocess
    import sys

    data, src = _add_setup(tmp_path, n=12)
    before = len(annotations.read_annotations(data))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    runs = [subprocess.Popen([sys.executable, "-c", _ADD, "0", str(data), str(src)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs
    _each_picture_once(data, src, before)
    assert sorted(o[0].split()[1] for o in outs) == ["0", "12"]  # "added N pictures ..."
