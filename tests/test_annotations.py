import pandas as pd
import pytest
from PIL import Image

from conftest import CLASSES, run_cli
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
